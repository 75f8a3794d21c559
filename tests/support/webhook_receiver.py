"""A real HTTP receiver for webhook tests: http.server in a thread on 127.0.0.1, whose
behaviour is chosen per path, recording every request it gets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """Paths: /ok; /status/<code>[?retry_after=N]; /flaky/<n> (500 n times, then 200);
    /hang/<seconds> (answers after that long); /redirect (302 to /ok); /huge (200 with a
    10 MB body, counting what the client took); /slow/<seconds> then 200."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.huge_bytes_written = 0
        self.flaky_counts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                receiver.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path, _, query = handler.path.partition("?")
        parts = path.strip("/").split("/")
        kind = parts[0]
        if kind == "status":
            headers = {}
            if query.startswith("retry_after="):
                headers["Retry-After"] = query.split("=", 1)[1]
            return self._send(handler, int(parts[1]), b"nope", headers)
        if kind == "flaky":
            with self.lock:
                seen = self.flaky_counts.get(path, 0)
                self.flaky_counts[path] = seen + 1
            return self._send(handler, 500 if seen < int(parts[1]) else 200, b"flaky")
        if kind in ("hang", "slow"):
            time.sleep(float(parts[1]))
            return self._send(handler, 200, b"late")
        if kind == "redirect":
            return self._send(handler, 302, b"", {"Location": self.url("/ok")})
        if kind == "huge":
            return self._huge(handler)
        return self._send(handler, 200, b"thanks")

    def _send(self, handler, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client hung up (a timeout)

    def _huge(self, handler) -> None:
        size = 10 * 1024 * 1024
        chunk = b"x" * 65536
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            for _ in range(size // len(chunk)):
                handler.wfile.write(chunk)
                with self.lock:
                    self.huge_bytes_written += len(chunk)
        except OSError:
            pass  # the client closed the connection without reading it all

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
