"""The dashboard survives its server going away: it says it is reconnecting, resumes its
streams with `last_event_id` when the server is back, and shows what happened meanwhile
without a reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.browser import WEB_ENV, Api, open_dashboard
from tests.support.processes import free_port, start, stop, wait_for_http
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


@pytest.mark.parametrize("sockets_in", ["worker", "page"])
def test_reconnects_and_catches_up_after_a_restart(live, settings, page, api, sockets_in):
    """The page follows server B; while B is down, the change is made through server A. The
    sockets are the SharedWorker's, or the page's own (where there is no SharedWorker; then
    Playwright sees them, and the resume's URL is checked)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start("web", settings, PORT=str(port), **WEB_ENV)
    try:
        wait_for_http(f"{base}/ready", web)
        sockets = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        session = api.session("Survives a restart", start=True)
        waiting = api.task(
            session["id"], "Write the guide", required_capabilities=["DOCUMENTATION"]
        )
        query = "?no-shared-worker" if sockets_in == "page" else ""
        open_dashboard(page, base, f"{query}#/sessions/{session['id']}")
        node = page.locator(f'.node[data-task-id="{waiting["id"]}"]')
        expect(node).to_have_attribute("data-status", "PENDING")  # no agent can take it
        api.task(session["id"], "Seen live before the drop", required_capabilities=["DEPLOYMENT"])
        expect(page.locator(".node", has_text="Seen live before the drop")).to_be_visible()
        page.evaluate("window.notReloaded = true")

        stop(web)
        expect(page.locator("#connection")).to_have_text("Reconnecting…")
        writer = api.agent(capabilities=["DOCUMENTATION"], name=f"writer-{sockets_in}")
        wait_for(
            lambda: Api(live).call("GET", f"/api/v1/tasks/{waiting['id']}")["status"] != "PENDING"
        )

        web = start("web", settings, PORT=str(port), **WEB_ENV)
        wait_for_http(f"{base}/ready", web)
        expect(page.locator("#connection")).to_have_text("Live")
        expect(node).to_have_attribute("data-status", "ASSIGNED")
        expect(node.locator(".node-agent")).to_have_text(f"held by {writer['name']}")
        if sockets_in == "page":
            assert any("/ws/sessions?last_event_id=" in url for url in sockets), sockets
        api.post(f"/api/v1/tasks/{waiting['id']}/start", {"agent_id": writer["id"]})
        expect(node).to_have_attribute("data-status", "IN_PROGRESS")  # live again
        assert page.evaluate("window.notReloaded") is True
        api.call("DELETE", f"/api/v1/agents/{writer['id']}", expected=204)  # free for the next run
    finally:
        stop(web)
