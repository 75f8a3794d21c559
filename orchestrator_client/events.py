"""Iterate the events of a WebSocket stream (CONTRACT section 9), surviving drops.

`EventStream` connects with `simple_websocket`, sends the token as `?token=`, yields each
message as a dict, and after a drop (server restart, network, a 1001 on shutdown)
reconnects with `?last_event_id=` set to the newest event id it delivered, so the server
sends what was missed, once. Refusals that a retry will not cure (unknown stream 4404,
bad id 4400, 401, 403, 404) raise the matching OrchestratorError.

On an agent's own stream, `heartbeat(current_load)` sends the heartbeat on the socket
(docs/API.md, "Heartbeats on the stream") while the stream is being iterated; its answer
is not yielded as an event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from simple_websocket import ConnectionClosed, ConnectionError

from orchestrator_client.errors import (
    ERRORS_BY_CODE,
    ConnectionFailed,
    Forbidden,
    NotFound,
    OrchestratorError,
    Unauthorized,
    ValidationError,
)
from orchestrator_client.ws_client import Client

log = logging.getLogger(__name__)

# Close codes and handshake statuses after which reconnecting is pointless.
FINAL_CLOSE_CODES = {4400: ValidationError, 4401: Unauthorized, 4403: Forbidden, 4404: NotFound}
FINAL_HANDSHAKE_STATUSES = {400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound}
HEARTBEAT_ACK = "heartbeat.ack"


class _Client(Client):
    """The stream's client (orchestrator_client/ws_client.py), with a bound on the
    handshake (simple_websocket has none)."""

    def __init__(self, url: str, *, handshake_timeout: float) -> None:
        self.handshake_timeout = handshake_timeout
        super().__init__(url)

    def handshake(self):
        self.sock.settimeout(self.handshake_timeout)
        try:
            super().handshake()
        finally:
            self.sock.settimeout(None)  # the reader thread blocks on recv from now on


class EventStream:
    """An iterable of event dicts; thread-safe `close()`; `connected` is set while a
    socket is open; `last_event_id` is the newest stored-event id delivered."""

    def __init__(
        self,
        ws_url: str,
        path: str,
        token: str | None = None,
        last_event_id: str | int | None = None,
        *,
        reconnect: bool = True,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        receive_timeout: float = 1.0,
        handshake_timeout: float = 10.0,
        on_connect: Callable[[EventStream], None] | None = None,
    ) -> None:
        self.url = ws_url.rstrip("/") + "/" + path.lstrip("/")
        self.token = token
        self.last_event_id = str(last_event_id) if last_event_id is not None else None
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.receive_timeout = receive_timeout
        self.handshake_timeout = handshake_timeout
        self.on_connect = on_connect
        self.connected = threading.Event()
        self.connections = 0  # sockets opened so far
        self._closed = threading.Event()
        self._ws: _Client | None = None
        self._request_lock = threading.Lock()  # one heartbeat on the socket at a time
        self._reply: dict[str, Any] | None = None
        self._replied = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        failures = 0
        while not self._closed.is_set():
            try:
                ws = self._connect()
            except OrchestratorError:
                raise
            except Exception as exc:  # refused, reset, timed out, rejected handshake
                if not self.reconnect:
                    raise _unreachable(self.url, exc) from exc
                failures += 1
                self._pause(failures, f"connect failed ({exc.__class__.__name__}: {exc})")
                continue
            failures = 0
            try:
                yield from self._receive(ws)
            except ConnectionClosed as exc:
                if self._closed.is_set():
                    return
                final = FINAL_CLOSE_CODES.get(exc.reason)
                if final is not None:
                    message = f"{self.url}: closed {exc.reason} {exc.message or ''}"
                    raise final(message=message) from None
                if not self.reconnect:
                    return
                failures += 1
                self._pause(failures, f"closed {exc.reason} {exc.message or ''}".strip())
            finally:
                self.connected.clear()
                self._disconnect(ws)

    def close(self) -> None:
        self._closed.set()
        self._disconnect(self._ws)

    def heartbeat(self, current_load: int, timeout: float = 5.0) -> dict[str, Any]:
        """Heartbeat on this agent's stream: the agent as the server acknowledged it. The
        stream must be connected and iterated by some thread (the answer arrives there);
        ConnectionFailed when it is not, or no answer came within `timeout` (then use
        the HTTP heartbeat); the server's refusal as its OrchestratorError."""
        ws = self._ws
        if ws is None or not self.connected.is_set():
            raise ConnectionFailed(message=f"{self.url}: not connected")
        with self._request_lock:
            self._replied.clear()
            self._reply = None
            try:
                ws.send(json.dumps({"type": "heartbeat", "current_load": current_load}))
            except Exception as exc:  # closed meanwhile
                raise ConnectionFailed(message=f"{self.url}: {exc.__class__.__name__}") from exc
            if not self._replied.wait(timeout):
                raise ConnectionFailed(message=f"{self.url}: no answer to a heartbeat")
            reply = self._reply or {}
        payload = reply.get("payload") or {}
        if reply.get("type") == HEARTBEAT_ACK:
            return payload
        error = ERRORS_BY_CODE.get(payload.get("code"), OrchestratorError)
        raise error(
            code=payload.get("code"), message=payload.get("message"), details=payload.get("details")
        )

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _connect(self) -> _Client:
        try:
            ws = _Client(self._url(), handshake_timeout=self.handshake_timeout)
        except ConnectionError as exc:
            final = FINAL_HANDSHAKE_STATUSES.get(exc.status_code)
            if final is not None:
                raise final(
                    message=f"{self.url}: refused with HTTP {exc.status_code}",
                    status=exc.status_code,
                ) from None
            raise
        self._ws = ws
        if self._closed.is_set():  # closed while connecting
            self._disconnect(ws)
            raise ConnectionClosed(1000, "closed by the client")
        self.connections += 1
        self.connected.set()
        if self.on_connect is not None:
            try:
                self.on_connect(self)
            except Exception:
                log.exception("%s: on_connect failed", self.url)
        return ws

    def _receive(self, ws: _Client) -> Iterator[dict[str, Any]]:
        while not self._closed.is_set():
            raw = ws.receive(timeout=self.receive_timeout)
            if raw is None:
                continue
            try:
                message = json.loads(raw)
            except (TypeError, ValueError):
                log.warning("%s: a frame that is not JSON, skipped", self.url)
                continue
            if not isinstance(message, dict) or message.get("type") == "pong":
                continue
            if _answers_a_heartbeat(message):
                self._reply = message
                self._replied.set()
                continue
            event_id = str(message.get("id", ""))
            if event_id.isdigit() and message.get("type") != "events.dropped":
                if int(event_id) <= self._last_seq():
                    continue  # already delivered before a reconnect
                self.last_event_id = event_id
            yield message

    def _last_seq(self) -> int:
        last = self.last_event_id
        return int(last) if last is not None and last.isdigit() else -1

    def _url(self) -> str:
        scheme, netloc, path, query, fragment = urlsplit(self.url)
        params = [(k, v) for k, v in parse_qsl(query) if k not in ("token", "last_event_id")]
        if self.token:
            params.append(("token", self.token))
        if self.last_event_id is not None:
            params.append(("last_event_id", self.last_event_id))
        return urlunsplit((scheme, netloc, path, urlencode(params), fragment))

    def _pause(self, failures: int, why: str) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
        delay *= random.uniform(0.5, 1.0)
        log.info("%s: %s; reconnecting in %.1fs", self.url, why, delay)
        self._closed.wait(delay)

    def _disconnect(self, ws: _Client | None) -> None:
        if ws is None:
            return
        with contextlib.suppress(Exception):  # already closed, or the peer is gone
            ws.close()
        wake = getattr(ws, "event", None)  # a receive() waiting in another thread returns
        if wake is not None:
            wake.set()


def _answers_a_heartbeat(message: dict[str, Any]) -> bool:
    if message.get("type") == HEARTBEAT_ACK:
        return True
    payload = message.get("payload")
    return (
        message.get("type") == "error"
        and isinstance(payload, dict)
        and payload.get("request") == "heartbeat"
    )


def _unreachable(url: str, exc: Exception) -> OrchestratorError:
    return ConnectionFailed(message=f"{url}: {exc.__class__.__name__}: {exc}")
