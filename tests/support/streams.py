"""A WebSocket client for the event streams of a live server."""

from __future__ import annotations

import json
import time

from simple_websocket import ConnectionClosed

from orchestrator_client.ws_client import Client


class Stream:
    """A WebSocket client that collects what it receives."""

    def __init__(self, base: str, path: str):
        self.client = Client.connect(base.replace("http", "ws") + path)
        self.messages: list[dict] = []

    def receive_until(self, predicate, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not received in {timeout}s; got {self.types()}")
            raw = self.client.receive(timeout=min(remaining, 0.5))
            if raw is not None:
                self.messages.append(json.loads(raw))
        return self.messages

    def wait_types(self, *types: str, timeout: float = 10.0) -> list[dict]:
        wanted = list(types)
        self.receive_until(lambda ms: all(t in [m["type"] for m in ms] for t in wanted), timeout)
        return self.messages

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def ids(self) -> list[int]:
        return [int(m["id"]) for m in self.messages if m["type"] not in ("error", "pong")]

    def close(self):
        self.client.close()


def close_code(url: str, *, headers: dict | None = None) -> ConnectionClosed:
    """The close of a stream the server ends right after the upgrade (refused: 4400, 4403,
    4404; failed: 1011), read once: the client reads a close that arrives with the
    handshake's answer too (orchestrator_client/ws_client.py)."""
    client = Client.connect(url, headers=headers)
    try:
        for _ in range(20):
            client.receive(timeout=0.5)
    except ConnectionClosed as closed:
        return closed
    raise AssertionError(f"{url}: not closed within 10 s")
