"""The dashboard on a server that requires tokens (ORCHESTRATOR_ENV=production): it asks
for one, says clearly when a token is refused, and uses a good one for HTTP and the
WebSocket streams."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import expect

from shared import tokens
from tests.support.browser import WEB_ENV, Api
from tests.support.live_server import live_server_fixture

KEY = "d" * 48
FLOWER_URL = "https://ops.example.com/flower/"  # Flower behind a proxy
pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


production = live_server_fixture(
    **WEB_ENV, ORCHESTRATOR_ENV="production", API_SECRET_KEY=KEY, FLOWER_URL=FLOWER_URL
)


def token(role: str = "operator", **claims) -> str:
    return tokens.mint(key=KEY, sub=f"{role}-{uuid.uuid4().hex[:6]}", role=role, **claims)


def sign_in(page, value: str) -> None:
    page.get_by_label("Token", exact=True).fill(value)
    page.get_by_role("button", name="Use token").click()


def test_the_page_asks_for_a_token_and_uses_it(production, page):
    page.goto(f"{production}/dashboard")
    expect(page.get_by_role("heading", name="API token")).to_be_visible()
    expect(page.locator("#sessions-view")).to_be_hidden()

    sign_in(page, "not-a-token")
    expect(page.locator("#auth-error")).to_contain_text("The server refused this token")
    sign_in(page, tokens.mint(key="f" * 48, sub="mallory", role="admin"))  # another key
    expect(page.locator("#auth-error")).to_contain_text("The server refused this token")
    expect(page.locator("#sessions-view")).to_be_hidden()

    operator = token()
    sign_in(page, operator)
    expect(page.locator("#sessions-view")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Live")  # the streams took the token
    expect(page.locator("#sys-database")).to_have_text("ok")
    expect(page.locator("#flower-link")).to_have_attribute("href", FLOWER_URL)
    page.locator("#session-title").fill("Behind a token")
    page.get_by_role("button", name="Create session").click()
    row = page.locator("#sessions-body tr", has_text="Behind a token")
    expect(row.locator(".status-cell")).to_have_text("PENDING")
    session_id = row.get_attribute("data-session-id")
    Api(production, operator).post(f"/api/v1/sessions/{session_id}/start")
    expect(row.locator(".status-cell")).to_have_text("RUNNING")  # live, over the stream

    page.reload()  # the token is kept for the tab
    expect(page.locator("#connection")).to_have_text("Live")
    expect(row.locator(".status-cell")).to_have_text("RUNNING")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="API token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_token_refused_later_brings_the_form_back(production, page):
    expired = tokens.mint(
        key=KEY, sub="late", role="operator", ttl_seconds=60, now=int(time.time()) - 120
    )
    page.goto(f"{production}/dashboard")
    page.evaluate(f"sessionStorage.setItem('orchestrator.dashboard.token', '{expired}')")
    page.reload()
    expect(page.locator("#auth-error")).to_contain_text("The server refused the token")
    expect(page.locator("#sessions-view")).to_be_hidden()


def test_a_viewer_sees_no_write_controls(production, page):
    """The page reads the role from the token's claims: a viewer gets no forms and no
    action buttons (the API would refuse them), an operator gets them."""
    operator = Api(production, token())
    session = operator.session(f"Read only {uuid.uuid4().hex[:6]}", start=True)
    task = operator.task(session["id"], "Look, do not touch")
    page.goto(f"{production}/dashboard")
    sign_in(page, token("viewer"))
    expect(page.locator("#role")).to_have_text("viewer (read only)")
    row = page.locator("#sessions-body tr", has_text=session["title"])
    expect(row.locator(".status-cell")).to_have_text("RUNNING")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(page.locator("#session-form")).to_be_hidden()
    row.get_by_role("link", name=session["title"]).click()
    expect(page.locator("#session-summary .badge")).to_have_text("RUNNING")
    expect(page.locator("#session-actions").get_by_role("button")).to_have_count(0)
    expect(page.locator("#task-form")).to_be_hidden()
    expect(page.locator("#decompose-form")).to_be_hidden()
    page.locator(f'.node[data-task-id="{task["id"]}"]').click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Look, do not touch")
    expect(dialog.locator(".detail-actions")).to_have_count(0)  # no cancel, no assign

    page.keyboard.press("Escape")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, token("operator"))
    expect(page.locator("#role")).to_have_text("operator")
    actions = page.locator("#session-actions")  # back on the session's page
    expect(actions.get_by_role("button", name=f"Pause session {session['title']}")).to_be_visible()
    expect(page.locator("#task-form")).to_be_visible()
