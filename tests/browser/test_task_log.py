"""The task detail's log, live: the lines an agent posted before the dialog opened, then
each new batch as its task.log event arrives (no reload), stderr told apart, and the view
following the end while the task runs."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from tests.support.browser import open_dashboard
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


def post_lines(api, task_id, agent_id, texts, stream="stdout"):
    body = {"agent_id": agent_id, "lines": [{"stream": stream, "text": t} for t in texts]}
    return api.call("POST", f"/api/v1/tasks/{task_id}/logs", body, 202)


def test_the_task_detail_shows_its_log_live_and_follows_the_end(live, page, api):
    pool = f"logs-{uuid.uuid4().hex[:6]}"  # the worker gives the task to this agent alone
    session = api.session(f"Logs {pool}", start=True, pool=pool)
    body = {"name": pool, "type": "DEVOPS", "capabilities": ["DEPLOYMENT"], "pool": pool}
    agent = api.post("/api/v1/agents/register", body, 201)
    task = api.task(session["id"], "Deploy", required_capabilities=["DEPLOYMENT"])
    wait_for(lambda: api.call("GET", f"/api/v1/tasks/{task['id']}")["status"] == "ASSIGNED")
    api.post(f"/api/v1/tasks/{task['id']}/start", {"agent_id": agent["id"]})
    post_lines(api, task["id"], agent["id"], ["$ make deploy", "building image"])

    open_dashboard(page, live, f"#/sessions/{session['id']}?task={task['id']}")
    dialog = page.get_by_role("dialog")
    log = dialog.locator("#task-log")
    expect(log.locator(".log-line")).to_have_text(["$ make deploy", "building image"])

    post_lines(api, task["id"], agent["id"], ["warning: cache miss"], stream="stderr")
    post_lines(api, task["id"], agent["id"], ["pushed"])
    expect(log.locator(".log-line")).to_have_count(4)
    expect(log.locator(".log-stderr")).to_have_text(["warning: cache miss"])
    expect(log.locator(".log-line").last).to_have_text("pushed")

    # many lines: the view stays at the end while the task runs
    post_lines(api, task["id"], agent["id"], [f"step {n}" for n in range(300)])
    expect(log.locator(".log-line").last).to_have_text("step 299")
    at_end = "n => n.scrollTop + n.clientHeight >= n.scrollHeight - 4"
    page.wait_for_function(f"() => ({at_end})(document.querySelector('#task-log'))")
    assert log.evaluate("n => n.scrollHeight > n.clientHeight")  # it did scroll

    # scrolled up by the reader, it stays there as lines arrive
    log.evaluate("n => { n.scrollTop = 0; n.dispatchEvent(new Event('scroll')); }")
    post_lines(api, task["id"], agent["id"], ["later"])
    expect(log.locator(".log-line").last).to_have_text("later")
    assert log.evaluate("n => n.scrollTop") == 0

    api.post(f"/api/v1/tasks/{task['id']}/complete", {"agent_id": agent["id"], "result": {}})
    expect(dialog.locator(".badge").first).to_have_text("COMPLETED")
    expect(log.locator(".log-line")).to_have_count(305)  # a re-render keeps the log
