"""For the client's tests: a scripted HTTP server (answers on cue, which the real server
cannot give), and tidying a shared live server after each test."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator

from orchestrator_client import AgentNotFound, InvalidTransition, OrchestratorClient

# The API_SECRET_KEY of the client tests' production servers.
PRODUCTION_KEY = "client-tests-" + "k" * 40


def tidy(client: OrchestratorClient) -> None:
    """Cancel every unfinished session and deregister every agent."""
    for _ in range(20):
        unfinished = [
            s
            for status in ("PENDING", "RUNNING", "PAUSED")
            for s in client.list_sessions(status=status, page_size=100)["items"]
        ]
        agents = client.list_agents(page_size=100)["items"]
        if not unfinished and not agents:
            return
        for work_session in unfinished:
            with contextlib.suppress(InvalidTransition):
                client.cancel_session(work_session["id"])
        for agent in agents:
            with contextlib.suppress(AgentNotFound):
                client.deregister_agent(agent["id"])
    raise AssertionError("sessions or agents left over")


class Scripted(http.server.ThreadingHTTPServer):
    """An HTTP server answering from a script (the last answer repeats), recording each
    request: (method, path, headers)."""

    daemon_threads = True

    def __init__(self, script: list[dict]):
        self.script = list(script)
        self.requests: list[tuple[str, str, dict]] = []
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_answer(self) -> dict:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def handle_error(self, request, client_address):
        pass  # a client that timed out and left


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        answer = self.server.next_answer()
        time.sleep(answer.get("delay", 0))  # a slow answer, on cue
        body = answer.get("body", {})
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(answer["status"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in answer.get("headers", {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_args):
        pass


@contextlib.contextmanager
def scripted(*answers: dict) -> Iterator[Scripted]:
    server = Scripted(list(answers))
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def error_body(code: str, message: str = "nope") -> dict:
    return {"error": {"code": code, "message": message, "request_id": "rid-1"}}
