"""For the dashboard's tests: the browser's timeout, the web process's settings, the API
over plain HTTP and opening the dashboard."""

from __future__ import annotations

import uuid

import requests
from playwright.sync_api import expect

TIMEOUT_MS = 15_000
# The page holds two sockets (its view's stream and /ws/system); several pages, and a
# test's own clients, share one address.
WEB_ENV = {"WS_MAX_CONNECTIONS_PER_CLIENT": "100", "SYSTEM_EVENT_INTERVAL_SECONDS": "1"}


class Api:
    """The agent's and the operator's side, over plain HTTP."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: dict | None = None, expected: int = 200):
        response = requests.request(
            method, f"{self.base}{path}", json=body, headers=self.headers, timeout=10
        )
        assert response.status_code == expected, response.text
        return response.json() if response.content else None

    def post(self, path: str, body: dict | None = None, expected: int = 200):
        return self.call("POST", path, body or {}, expected)

    def session(self, title: str, start: bool = False, **fields) -> dict:
        session = self.post("/api/v1/sessions", {"title": title, **fields}, 201)
        if start:
            session = self.post(f"/api/v1/sessions/{session['id']}/start")
        return session

    def agent(
        self, capabilities=("CODE_GENERATION",), max_tasks: int = 2, name=None, type="BACKEND"
    ) -> dict:
        body = {
            "name": name or f"agent-{uuid.uuid4().hex[:6]}",
            "type": type,
            "capabilities": list(capabilities),
            "max_concurrent_tasks": max_tasks,
        }
        return self.post("/api/v1/agents/register", body, 201)

    def task(self, session_id: str, title: str, **fields) -> dict:
        return self.post("/api/v1/tasks", {"session_id": session_id, "title": title, **fields}, 201)


def open_dashboard(page, base: str, hash_: str = "") -> None:
    page.goto(f"{base}/dashboard{hash_}")
    expect(page.locator("#connection")).to_have_text("Live")
