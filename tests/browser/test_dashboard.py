"""The dashboard against a running stack (gunicorn `web` + a real Celery worker), in
headless Chromium: sessions, a task's life seen live, refused actions, the task graph,
filters and paging, the agents view."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests
from playwright.sync_api import expect

from tests.support.browser import open_dashboard
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def session_row(page, title: str):
    return page.locator("#sessions-body tr", has_text=title)


def test_the_page_is_served_whole_without_a_cdn(live):
    root = requests.get(f"{live}/", allow_redirects=False, timeout=10)
    assert root.status_code == 302 and root.headers["Location"].endswith("/dashboard")
    shell = requests.get(f"{live}/dashboard", timeout=10)
    assert shell.status_code == 200 and shell.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in shell.headers["Content-Security-Policy"]
    assert "X-RateLimit-Limit" not in shell.headers  # the page is not rate limited
    assets = re.findall(r'(?:src|href)="([^"#]+)"', shell.text)
    local = [url for url in assets if url.startswith("/")]
    assert {"/static/dashboard/main.js", "/static/dashboard/dashboard.css"} <= {
        url.split("?")[0] for url in local
    }
    # the only absolute URL is the Flower link (rewritten to this host by the script)
    assert [url for url in assets if not url.startswith("/")] == ["http://localhost:5555/"]
    for url in local:
        asset = requests.get(f"{live}{url}", timeout=10)
        assert asset.status_code == 200 and asset.content
    # the script's modules, each served from here too
    seen, waiting = set(), ["main.js"]
    while waiting:
        name = waiting.pop()
        module = requests.get(f"{live}/static/dashboard/{name}", timeout=10)
        assert module.status_code == 200, name
        assert "javascript" in module.headers["Content-Type"]
        seen.add(name)
        imported = re.findall(r'^import .* from "\./([\w.]+)";$', module.text, re.M)
        waiting += [n for n in imported if n not in seen]
    assert len(seen) >= 5


def test_create_a_session_and_watch_its_task_complete_live(live, page, api):
    open_dashboard(page, live)
    expect(page.locator("#sys-database")).to_have_text("ok")
    expect(page.locator("#sys-workers")).not_to_have_text("0")
    # no FLOWER_URL: Flower's port on the page's own host
    expect(page.locator("#flower-link")).to_have_attribute("href", "http://127.0.0.1:5555/")
    title = unique("Implement login")
    page.locator("#session-title").fill(title)
    page.locator("#session-priority").select_option("HIGH")
    page.get_by_label("Start now").check()
    page.get_by_role("button", name="Create session").click()
    row = session_row(page, title)
    expect(row.locator(".status-cell")).to_have_text("RUNNING")
    expect(row.locator(".priority-cell")).to_have_text("HIGH")

    row.get_by_role("link", name=title).click()
    expect(page.locator("#session-title-heading")).to_have_text(title)
    page.evaluate("window.notReloaded = true")
    agent = api.agent(capabilities=["CODE_GENERATION", "TESTING"])
    page.locator("#task-title").fill("Login endpoint")
    page.get_by_role("button", name="Create task").click()
    node = page.locator(".node", has_text="Login endpoint")
    expect(node).to_have_attribute("data-status", "ASSIGNED")  # the worker assigned it
    expect(node.locator(".node-agent")).to_have_text(f"held by {agent['name']}")
    task_id = node.get_attribute("data-task-id")

    api.post(f"/api/v1/tasks/{task_id}/start", {"agent_id": agent["id"]})
    expect(node).to_have_attribute("data-status", "IN_PROGRESS")
    api.post(f"/api/v1/tasks/{task_id}/complete", {"agent_id": agent["id"], "result": {"pr": 7}})
    expect(node).to_have_attribute("data-status", "COMPLETED")
    expect(node.locator(".badge")).to_have_text("COMPLETED")
    expect(node.locator(".node-agent")).to_have_text(f"done by {agent['name']}")
    expect(page.locator("#session-summary")).to_contain_text("1 of 1 tasks completed (100%)")

    # back on the list, the progress bar counts it
    page.get_by_role("link", name="All sessions").click()
    expect(session_row(page, title).locator(".progress-text")).to_have_text(
        "1 of 1 tasks completed (100%)"
    )
    assert page.evaluate("window.notReloaded") is True


def session_buttons(scope) -> list[str]:
    """The session actions a row or the session's page offers (the visible buttons)."""
    return scope.locator(".actions button:visible").all_inner_texts()


def test_only_the_actions_the_state_allows_are_offered(live, page, api):
    title = unique("Offered")
    api.session(title)
    open_dashboard(page, live)
    row = session_row(page, title)
    expect(row.locator(".status-cell")).to_have_text("PENDING")
    assert session_buttons(row) == ["Start", "Cancel"]
    row.get_by_role("button", name=f"Start session {title}", exact=True).click()
    expect(row.locator(".status-cell")).to_have_text("RUNNING")
    expect(row.locator(".actions button:visible")).to_have_count(3)
    assert session_buttons(row) == ["Pause", "Cancel", "Complete"]

    # the same on the session's page, from the keyboard
    row.get_by_role("link", name=title).click()
    expect(page.locator("#session-title-heading")).to_have_text(title)
    actions = page.locator("#session-actions")
    pause = actions.get_by_role("button", name=f"Pause session {title}", exact=True)
    pause.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#session-summary .badge")).to_have_text("PAUSED")
    expect(page.locator("#message")).to_contain_text("paused")
    expect(actions.locator("button:visible")).to_have_count(2)
    assert session_buttons(page.locator("#session-view .view-head")) == ["Resume", "Cancel"]
    actions.get_by_role("button", name=f"Cancel session {title}", exact=True).click()
    expect(page.locator("#session-summary .badge")).to_have_text("CANCELLED")
    expect(actions.locator("button:visible")).to_have_count(0)
    expect(page.locator("#task-form")).to_be_hidden()  # a finished session takes no tasks


def test_an_action_refused_meanwhile_shows_the_api_message(live, page, api):
    """The page has not heard yet that the session started elsewhere (its stream is held):
    the Start it still offers is refused, with the API's message."""
    page.route_web_socket(re.compile(r"/ws/sessions(\?.*)?$"), hold_events)
    title = unique("Started elsewhere")
    session = api.session(title)
    open_dashboard(page, live, "?no-shared-worker")
    row = session_row(page, title)
    expect(row.locator(".status-cell")).to_have_text("PENDING")
    api.post(f"/api/v1/sessions/{session['id']}/start")
    refused = requests.post(f"{live}/api/v1/sessions/{session['id']}/start", timeout=10)
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    row.get_by_role("button", name=f"Start session {title}", exact=True).click()
    alert = page.get_by_role("alert").filter(has_text=message)
    expect(alert).to_be_visible()
    expect(page.locator("#message")).to_have_attribute("data-kind", "error")


routed: list = []


def hold_events(socket):
    """A stream the page opens, connected to the server, whose events never reach it."""
    server = socket.connect_to_server()
    server.on_message(lambda message: None)
    routed.append(socket)


def test_decompose_from_the_page_draws_the_graph(live, page, api):
    session = api.session(unique("Checkout"))
    parent = api.task(session["id"], "Checkout flow", required_capabilities=["SYSTEM_DESIGN"])
    blocked = api.task(session["id"], "Announce it", depends_on=[parent["id"]])
    open_dashboard(page, live, f"#/sessions/{session['id']}")
    expect(page.locator(f'.node[data-task-id="{parent["id"]}"]')).to_be_visible()
    expect(page.locator(f'.node[data-task-id="{blocked["id"]}"]')).to_have_attribute(
        "data-status", "BLOCKED"
    )

    page.get_by_label("Task (pending, not yet decomposed)").select_option(parent["id"])
    page.get_by_label("Template").select_option("BUGFIX")
    expect(page.locator("#template-steps")).to_contain_text("Reproduce")
    page.get_by_role("button", name="Decompose", exact=True).click()
    subtasks = page.locator(f'.node[data-task-id="{parent["id"]}"] .subtasks .node')
    expect(subtasks).to_have_count(4)
    expect(subtasks.first).to_contain_text("Reproduce: Checkout flow")

    tasks = api.call("GET", f"/api/v1/tasks?session_id={session['id']}&page_size=100")["items"]
    edges = sum(len(task["depends_on"]) for task in tasks)
    assert edges == 4  # the subtasks' chain of three, and "Announce it" after its parent
    expect(page.locator("#graph path.edge")).to_have_count(edges)
    chain = page.locator(f'#graph path.edge[data-to="{blocked["id"]}"]')
    expect(chain).to_have_attribute("data-from", parent["id"])
    # the decomposed task can no longer be chosen
    expect(page.locator(f'#decompose-task option[value="{parent["id"]}"]')).to_have_count(0)


def test_filters_and_paging(live, page, api):
    prefix = unique("Paged")
    for index in range(21):
        api.session(f"{prefix} {index:02}")
    open_dashboard(page, live)
    expect(page.locator("#sessions-body tr")).to_have_count(20)
    expect(page.locator("#page-info")).to_contain_text("Page 1 of")
    page.get_by_role("button", name="Older").click()
    expect(page.locator("#page-info")).to_contain_text("Page 2 of")
    expect(page).to_have_url(re.compile(r"#/sessions\?page=2$"))
    expect(session_row(page, f"{prefix} 00")).to_have_count(1)  # the oldest of them
    page.get_by_role("button", name="Newer").click()
    expect(page.locator("#page-info")).to_contain_text("Page 1 of")

    paused = api.session(unique("To pause"), start=True)
    page.get_by_label("Status", exact=True).select_option("PAUSED")
    expect(page).to_have_url(re.compile(r"#/sessions\?status=PAUSED$"))
    rows = page.locator("#sessions-body tr")
    expect(page.locator("#page-info")).to_contain_text("Page 1 of 1")
    assert rows.count() == page.locator("#sessions-body tr[data-status=PAUSED]").count()
    expect(session_row(page, paused["title"])).to_have_count(0)
    api.post(f"/api/v1/sessions/{paused['id']}/pause")  # enters the filter, live
    expect(session_row(page, paused["title"]).locator(".status-cell")).to_have_text("PAUSED")
    api.post(f"/api/v1/sessions/{paused['id']}/resume")  # and leaves it
    expect(session_row(page, paused["title"])).to_have_count(0)


def test_agents_view_shows_an_agent_and_its_load_live(live, page, api):
    open_dashboard(page, live, "#/agents")
    expect(page.get_by_role("link", name="Agents")).to_have_attribute("aria-current", "page")
    agent = api.agent(capabilities=["SECURITY_AUDIT"], max_tasks=2)
    row = page.locator(f'#agents-body tr[data-agent-id="{agent["id"]}"]')
    expect(row).to_contain_text(agent["name"])
    expect(row.locator(".status-cell")).to_have_text("IDLE")
    expect(row.locator(".caps-cell")).to_have_text("SECURITY_AUDIT")
    expect(row.locator(".load-cell")).to_have_text("0%")
    expect(row.locator(".held-cell")).to_have_text("0 / 2")
    expect(row.locator(".heartbeat-cell")).to_have_text(re.compile(r"^\d+ s ago$"))

    api.post(f"/api/v1/agents/{agent['id']}/heartbeat", {"current_load": 40})
    expect(row.locator(".load-cell")).to_have_text("40%")
    session = api.session(unique("Audit"), start=True)
    task = api.task(session["id"], "Audit the login", required_capabilities=["SECURITY_AUDIT"])
    expect(row.locator(".held-cell")).to_have_text("1 / 2")
    expect(row.locator(".status-cell")).to_have_text("ACTIVE")
    wait_for(lambda: api.call("GET", f"/api/v1/tasks/{task['id']}")["status"] == "ASSIGNED")

    api.call("DELETE", f"/api/v1/agents/{agent['id']}", expected=204)
    expect(row).to_have_count(0)


def test_events_dropped_makes_the_page_reload_over_http(live, page, api):
    """The server says the events the page asked for are gone: the page reloads its view
    over HTTP instead of trusting what it has (the stream is intercepted to hold events)."""
    page.route_web_socket(re.compile(r"/ws/sessions(\?.*)?$"), hold_events)
    # Playwright routes the page's own sockets: without the SharedWorker, the page holds them
    open_dashboard(page, live, "?no-shared-worker")
    # its first list must be in before the session is made, or that list would show it
    page.wait_for_load_state("networkidle")
    title = unique("Unheard")
    api.session(title)
    page.wait_for_timeout(1000)
    expect(session_row(page, title)).to_have_count(0)
    dropped = {"last_event_id": "1", "oldest_available_id": "50", "message": "dropped"}
    routed[-1].send(json.dumps({"id": "1", "type": "events.dropped", "payload": dropped}))
    expect(session_row(page, title)).to_have_count(1)


def test_an_unknown_session_says_so(live, page):
    open_dashboard(page, live, f"#/sessions/{uuid.uuid4()}")
    expect(page.locator("#session-title-heading")).to_have_text("Session not found")
    expect(page.locator("#message")).to_contain_text("does not exist")


def test_no_console_errors_and_a_favicon(live, browser, api):
    """Every view loads without a console error (before: a 404 for /favicon.ico each load)."""
    icon = requests.get(f"{live}/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
    assert icon.history and icon.history[0].status_code in (301, 302)
    session = api.session(unique("Quiet console"))
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    try:
        open_dashboard(page, live)
        expect(page.locator("link[rel=icon]")).to_have_attribute("type", "image/svg+xml")
        for hash_ in ("#/agents", "#/activity", f"#/sessions/{session['id']}", "#/sessions"):
            page.goto(f"{live}/dashboard{hash_}")
            expect(page.locator("#connection")).to_have_text("Live")
        page.wait_for_timeout(1000)
    finally:
        context.close()
    assert not errors, errors
    assert not failed, failed
