"""Screenshots of each view, over a small working scene: sessions in every state, a feature
decomposed and half done, four agents at work.

They go to a temporary directory; to refresh the README's images in docs/screenshots:

    DASHBOARD_SCREENSHOTS=1 .venv/bin/pytest tests/browser/test_screenshots.py
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.support import ROOT
from tests.support.browser import Api, open_dashboard
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


@pytest.fixture
def shots_dir(tmp_path):
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        return os.path.join(ROOT, "docs", "screenshots")
    return str(tmp_path)


def held_by(api: Api, task_id: str, timeout: float = 15) -> str:
    """The agent the worker assigned the task to."""
    return wait_for(
        lambda: api.call("GET", f"/api/v1/tasks/{task_id}")["assigned_agent_id"], timeout
    )


def work(api: Api, task_id: str, *, finish: bool = True, progress: int | None = None) -> None:
    agent_id = held_by(api, task_id)
    api.post(f"/api/v1/tasks/{task_id}/start", {"agent_id": agent_id})
    if progress is not None:
        api.post(f"/api/v1/tasks/{task_id}/progress", {"agent_id": agent_id, "progress": progress})
    if finish:
        api.post(f"/api/v1/tasks/{task_id}/complete", {"agent_id": agent_id, "result": {}})


def subtask(api: Api, parent_id: str, prefix: str) -> dict:
    def find():
        parent = api.call("GET", f"/api/v1/tasks/{parent_id}")
        for task_id in parent.get("subtasks") or []:
            task = api.call("GET", f"/api/v1/tasks/{task_id}")
            if task["title"].startswith(prefix):
                return task
        return None

    return wait_for(find)


def build_scene(api: Api) -> dict:
    agents = {
        "architect-1": ("FULLSTACK", ["SYSTEM_DESIGN", "CODE_REVIEW"]),
        "backend-1": ("BACKEND", ["CODE_GENERATION", "TESTING", "DEBUGGING"]),
        "backend-2": ("BACKEND", ["CODE_GENERATION", "TESTING"]),
        "writer-1": ("QA", ["DOCUMENTATION", "TESTING"]),
    }
    registered = {
        name: api.agent(capabilities=caps, max_tasks=2, name=name, type=kind)
        for name, (kind, caps) in agents.items()
    }

    done = api.session("Fix flaky checkout test", start=True, type="DEBUGGING")
    fix = api.task(done["id"], "Stabilise the payment mock", required_capabilities=["DEBUGGING"])
    work(api, fix["id"])
    api.post(f"/api/v1/sessions/{done['id']}/complete")
    paused = api.session("Refactor the billing module", start=True, type="REFACTORING")
    api.post(f"/api/v1/sessions/{paused['id']}/pause")
    cancelled = api.session("Spike: GraphQL gateway", priority="LOW")
    api.post(f"/api/v1/sessions/{cancelled['id']}/cancel")
    api.session("Payments microservice", priority="CRITICAL")
    api.session("API reference pages", priority="LOW", type="DOCUMENTATION")

    main = api.session("Implement user authentication", priority="HIGH")
    feature = api.task(main["id"], "Login and sessions", required_capabilities=["SYSTEM_DESIGN"])
    api.post(f"/api/v1/tasks/{feature['id']}/decompose", {"template": "FEATURE"}, 202)
    subtask(api, feature["id"], "Review")  # decomposed before the session starts
    api.post(f"/api/v1/sessions/{main['id']}/start")
    work(api, subtask(api, feature["id"], "Design")["id"])
    work(api, subtask(api, feature["id"], "Implement")["id"], finish=False, progress=60)
    reset = api.task(main["id"], "Password reset e-mails", complexity="LOW")
    work(api, reset["id"], finish=False, progress=30)
    api.task(main["id"], "Rate-limit login attempts", depends_on=[reset["id"]])
    loads = {"architect-1": 10, "backend-1": 65, "backend-2": 40, "writer-1": 0}
    for name, load in loads.items():
        api.post(f"/api/v1/agents/{registered[name]['id']}/heartbeat", {"current_load": load})
    return main


def test_screenshots_of_each_view(live, page, api, shots_dir):
    open_dashboard(page, live, "#/activity")  # open while the scene is made: its events
    main = build_scene(api)
    os.makedirs(shots_dir, exist_ok=True)

    page.get_by_role("link", name="Sessions").click()
    expect(page.locator("#sessions-body tr")).to_have_count(6)
    expect(page.locator("#sys-counts")).to_contain_text("1 session running")
    page.screenshot(path=os.path.join(shots_dir, "sessions.png"))

    page.get_by_role("link", name="Implement user authentication").click()
    expect(page.locator("#graph .subtasks .node")).to_have_count(5)
    expect(page.locator("#graph .node-agent").first).to_be_visible()
    page.locator("#main").focus()
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator("#session-view .graph-card").bounding_box()
    page.set_viewport_size({"width": 1360, "height": int(box["y"] + box["height"] + 24)})
    page.screenshot(path=os.path.join(shots_dir, "session.png"))
    assert main["id"] in page.url

    page.locator(".node:not(.has-children)", has_text="60%").click()  # Implement: …
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".detail-progress")).to_contain_text("60%")
    expect(dialog.locator("#task-history li")).not_to_have_count(0)
    page.screenshot(path=os.path.join(shots_dir, "task.png"))
    page.keyboard.press("Escape")

    page.set_viewport_size({"width": 1360, "height": 560})
    page.get_by_role("link", name="Agents").click()
    expect(page.locator("#agents-body tr")).to_have_count(4)
    expect(page.locator("#agents-body .held-cell").first).to_be_visible()
    page.screenshot(path=os.path.join(shots_dir, "agents.png"))

    page.set_viewport_size({"width": 1360, "height": 900})
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#activity-feed .feed-item")).not_to_have_count(0)
    expect(page.locator("#chart-tasks svg rect.chart-bar.completed")).not_to_have_count(0)
    page.screenshot(path=os.path.join(shots_dir, "activity.png"))

    for name in ("sessions", "session", "task", "agents", "activity"):
        assert os.path.getsize(os.path.join(shots_dir, f"{name}.png")) > 10_000
