"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright from PyPI;
`make test` installs the browser when it is missing). No `playwright install`: the browser
is the system's. A missing browser fails the tests, it does not skip them.

Each module gets one browser and one `web` process (the Procfile's gunicorn) with a real
Celery worker in process, so assignments happen as in production.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from tests.conftest import empty_tables
from tests.test_processes import running_web

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 15_000
# The page holds two sockets (its view's stream and /ws/system); several pages, and a
# test's own clients, share one address.
WEB_ENV = {"WS_MAX_CONNECTIONS_PER_CLIENT": "100", "SYSTEM_EVENT_INTERVAL_SECONDS": "1"}

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser():
    path = shutil.which(CHROMIUM) or CHROMIUM
    assert os.path.exists(path), f"{CHROMIUM} is missing: `make test` installs it (apt chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(settings, database, celery_worker):
    """The web process for the module's tests; tables emptied once, before it starts."""
    empty_tables(database)
    with running_web(settings, **WEB_ENV) as base:
        yield base


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


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


@pytest.fixture
def api(live):
    return Api(live)


def open_dashboard(page, base: str, hash_: str = "") -> None:
    page.goto(f"{base}/dashboard{hash_}")
    expect(page.locator("#connection")).to_have_text("Live")
