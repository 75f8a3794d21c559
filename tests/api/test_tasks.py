import threading
import uuid

import pytest

from tests.api.helpers import (
    act,
    assert_error,
    make_session,
    make_task,
    register,
    start_session,
)


@pytest.fixture
def session(client):
    return start_session(client)


@pytest.fixture
def agent(client):
    return register(client, capabilities=["CODE_GENERATION", "TESTING"])


def get_task(client, task_id):
    return client.get(f"/api/v1/tasks/{task_id}").json


def test_create_applies_defaults(client, session):
    task = make_task(client, session["id"], title="Login endpoint", description="POST /login")
    assert task["status"] == "PENDING"
    assert task["required_capabilities"] == ["CODE_GENERATION"]
    assert task["complexity"] == "MEDIUM"
    assert task["depends_on"] == [] and task["subtasks"] == []
    assert task["attempts"] == 0 and task["assigned_agent_id"] is None
    assert task["timeout_seconds"] == 3600
    assert get_task(client, task["id"]) == task


def test_create_in_unknown_session(client):
    response = client.post("/api/v1/tasks", json={"session_id": str(uuid.uuid4()), "title": "t"})
    assert_error(response, 404, "SESSION_NOT_FOUND")


@pytest.mark.parametrize("finish", ["cancel", "complete"])
def test_create_in_finished_session(client, session, finish):
    client.post(f"/api/v1/sessions/{session['id']}/{finish}")
    response = client.post("/api/v1/tasks", json={"session_id": session["id"], "title": "t"})
    assert_error(response, 400, "INVALID_TRANSITION")


@pytest.mark.parametrize(
    "changes",
    [
        {"title": ""},
        {"title": "x" * 201},
        {"description": "x" * 10001},
        {"complexity": "EXTREME"},
        {"required_capabilities": []},
        {"required_capabilities": ["FLYING"]},
        {"required_capabilities": ["TESTING", "testing"]},
        {"depends_on": ["not-a-uuid"]},
        {"timeout_seconds": 0},
        {"timeout_seconds": 86401},
        {"session_id": "abc"},
        {"parent_id": "abc"},
        {"extra": 1},
    ],
)
def test_bad_task_bodies(client, session, changes):
    body = {"session_id": session["id"], "title": "t", **changes}
    assert_error(client.post("/api/v1/tasks", json=body), 400, "VALIDATION_ERROR")
    assert client.get("/api/v1/tasks").json["total"] == 0


def test_dependency_problems_are_refused(client, session):
    other = start_session(client, title="other")
    foreign = make_task(client, other["id"])
    mine = make_task(client, session["id"])
    for depends_on in (
        [foreign["id"]],
        [str(uuid.uuid4())],
        [mine["id"], mine["id"]],
    ):
        body = {"session_id": session["id"], "title": "t", "depends_on": depends_on}
        error = assert_error(client.post("/api/v1/tasks", json=body), 400, "VALIDATION_ERROR")
        assert "depends_on" in error["details"]
    assert client.get(f"/api/v1/tasks?session_id={session['id']}").json["total"] == 1


def test_a_cycle_through_the_parent_is_refused(client, session):
    parent = make_task(client, session["id"], title="parent")
    child = make_task(client, session["id"], parent_id=parent["id"])
    body = {
        "session_id": session["id"],
        "title": "grandchild",
        "parent_id": child["id"],
        "depends_on": [parent["id"]],
    }
    error = assert_error(client.post("/api/v1/tasks", json=body), 400, "VALIDATION_ERROR")
    assert "cycle" in " ".join(error["details"]["depends_on"])


def test_parent_must_be_in_the_same_session(client, session):
    other = start_session(client, title="other")
    foreign = make_task(client, other["id"])
    body = {"session_id": session["id"], "title": "t", "parent_id": foreign["id"]}
    assert_error(client.post("/api/v1/tasks", json=body), 400, "VALIDATION_ERROR")


def test_dependencies_block_until_the_last_completes(client, session, agent):
    first = make_task(client, session["id"], title="first")
    second = make_task(client, session["id"], title="second")
    waiting = make_task(client, session["id"], depends_on=[first["id"], second["id"]])
    assert waiting["status"] == "BLOCKED"
    assert sorted(waiting["depends_on"]) == sorted([first["id"], second["id"]])
    assert_error(act(client, waiting["id"], "assign"), 400, "INVALID_TRANSITION")
    for task, expected in ((first, "BLOCKED"), (second, "PENDING")):
        act(client, task["id"], "assign", {"agent_id": agent["id"]})
        act(client, task["id"], "start")
        assert act(client, task["id"], "complete", {"result": {"ok": True}}).status_code == 200
        assert get_task(client, waiting["id"])["status"] == expected


def test_two_dependencies_completing_at_once_release_the_dependent(app, client):
    for _ in range(5):
        session = start_session(client)
        agent = register(client, name=f"a-{uuid.uuid4()}")
        deps = [make_task(client, session["id"]) for _ in range(2)]
        waiting = make_task(client, session["id"], depends_on=[d["id"] for d in deps])
        for dep in deps:
            act(client, dep["id"], "assign", {"agent_id": agent["id"]})
            act(client, dep["id"], "start")
        barrier = threading.Barrier(2)

        def complete(task_id, barrier=barrier):
            local = app.test_client()
            barrier.wait()
            assert act(local, task_id, "complete").status_code == 200

        threads = [threading.Thread(target=complete, args=(d["id"],)) for d in deps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert get_task(client, waiting["id"])["status"] == "PENDING"


def _to_status(client, session, agent, status):
    """A task of `session` in `status`."""
    if status == "BLOCKED":
        dep = make_task(client, session["id"])
        return make_task(client, session["id"], depends_on=[dep["id"]])
    task = make_task(client, session["id"])
    steps = {
        "PENDING": [],
        "ASSIGNED": [("assign", {"agent_id": agent["id"]})],
        "IN_PROGRESS": [("assign", {"agent_id": agent["id"]}), ("start", {})],
        "COMPLETED": [("assign", {"agent_id": agent["id"]}), ("start", {}), ("complete", {})],
        "FAILED": [
            ("assign", {"agent_id": agent["id"]}),
            ("fail", {"error": "boom", "retryable": False}),
        ],
        "CANCELLED": [("cancel", {})],
    }[status]
    for action, body in steps:
        assert act(client, task["id"], action, body).status_code == 200
    assert get_task(client, task["id"])["status"] == status
    return task


ACTIONS = {
    "start": {},
    "complete": {"result": {"done": True}},
    "fail": {"error": "it broke", "retryable": True},
    "cancel": {},
    "assign": {},
    "progress": {"progress": 50},
}
EXPECTED = {
    ("PENDING", "cancel"): "CANCELLED",
    ("PENDING", "assign"): "ASSIGNED",
    ("BLOCKED", "cancel"): "CANCELLED",
    ("ASSIGNED", "start"): "IN_PROGRESS",
    ("ASSIGNED", "fail"): "PENDING",
    ("ASSIGNED", "cancel"): "CANCELLED",
    ("IN_PROGRESS", "complete"): "COMPLETED",
    ("IN_PROGRESS", "fail"): "PENDING",
    ("IN_PROGRESS", "cancel"): "CANCELLED",
    ("IN_PROGRESS", "progress"): "IN_PROGRESS",
}
STATUSES = ["PENDING", "BLOCKED", "ASSIGNED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_task_move(client, session, agent, status, action):
    task = _to_status(client, session, agent, status)
    before = get_task(client, task["id"])
    response = act(client, task["id"], action, ACTIONS[action])
    expected = EXPECTED.get((status, action))
    if expected is None:
        error = assert_error(response, 400, "INVALID_TRANSITION")
        assert status in error["message"]
        assert get_task(client, task["id"]) == before
        return
    assert response.status_code == 200, response.json
    assert response.json["status"] == expected
    held = client.get(f"/api/v1/agents/{agent['id']}").json["active_tasks"]
    assert held == (1 if expected in ("ASSIGNED", "IN_PROGRESS") else 0)
    if action == "fail":
        assert response.json["attempts"] == 1 and response.json["error"] == "it broke"
        assert response.json["assigned_agent_id"] is None
    if action == "complete":
        assert response.json["result"] == {"done": True}


def test_unknown_and_malformed_task_ids(client):
    assert_error(client.get(f"/api/v1/tasks/{uuid.uuid4()}"), 404, "TASK_NOT_FOUND")
    assert_error(client.get("/api/v1/tasks/123"), 400, "VALIDATION_ERROR")
    for action in ACTIONS:
        assert_error(act(client, uuid.uuid4(), action, ACTIONS[action]), 404, "TASK_NOT_FOUND")


def test_fail_needs_an_error(client, session, agent):
    task = _to_status(client, session, agent, "ASSIGNED")
    assert_error(act(client, task["id"], "fail", {}), 400, "VALIDATION_ERROR")
    assert_error(act(client, task["id"], "progress", {"progress": 101}), 400, "VALIDATION_ERROR")


def test_retries_then_fails_for_good_and_fails_the_session(client, session, agent):
    task = make_task(client, session["id"], title="flaky")
    other = make_task(client, session["id"], title="innocent")
    for attempt in (1, 2, 3):
        act(client, task["id"], "assign", {"agent_id": agent["id"]})
        act(client, task["id"], "start")
        body = act(client, task["id"], "fail", {"error": f"boom {attempt}"}).json
        assert body["attempts"] == attempt
        assert body["status"] == ("FAILED" if attempt == 3 else "PENDING")
    failed_session = client.get(f"/api/v1/sessions/{session['id']}").json
    assert failed_session["status"] == "FAILED"
    assert "flaky" in failed_session["error"] and "boom 3" in failed_session["error"]
    assert get_task(client, other["id"])["status"] == "CANCELLED"
    assert client.get(f"/api/v1/agents/{agent['id']}").json["status"] == "IDLE"


def test_not_retryable_fails_at_once(client, session, agent):
    task = _to_status(client, session, agent, "ASSIGNED")
    body = act(client, task["id"], "fail", {"error": "bad spec", "retryable": False}).json
    assert body["status"] == "FAILED" and body["attempts"] == 1
    assert client.get(f"/api/v1/sessions/{session['id']}").json["status"] == "FAILED"


@pytest.mark.parametrize("action", ["cancel", "complete"])
def test_session_end_cancels_unfinished_tasks_and_frees_agents(client, session, agent, action):
    done = _to_status(client, session, agent, "COMPLETED")
    held = _to_status(client, session, agent, "IN_PROGRESS")
    waiting = _to_status(client, session, agent, "BLOCKED")
    assert client.get(f"/api/v1/agents/{agent['id']}").json["status"] == "ACTIVE"
    client.post(f"/api/v1/sessions/{session['id']}/{action}")
    assert get_task(client, done["id"])["status"] == "COMPLETED"
    assert get_task(client, held["id"])["status"] == "CANCELLED"
    assert get_task(client, waiting["id"])["status"] == "CANCELLED"
    freed = client.get(f"/api/v1/agents/{agent['id']}").json
    assert (freed["status"], freed["active_tasks"]) == ("IDLE", 0)


def test_cancel_cascades_to_waiting_tasks(client, session):
    first = make_task(client, session["id"])
    waiting = make_task(client, session["id"], depends_on=[first["id"]])
    act(client, first["id"], "cancel")
    assert get_task(client, waiting["id"])["status"] == "CANCELLED"


def test_start_by_another_agent_is_forbidden(client, session, agent):
    other = register(client, name="other")
    task = _to_status(client, session, agent, "ASSIGNED")
    assert_error(act(client, task["id"], "start", {"agent_id": other["id"]}), 403, "FORBIDDEN")
    assert get_task(client, task["id"])["status"] == "ASSIGNED"
    assert act(client, task["id"], "start", {"agent_id": agent["id"]}).status_code == 200


def test_assign_picks_the_least_loaded_fitting_agent(client, session):
    register(client, name="tester", capabilities=["TESTING"])
    loaded = register(client, name="loaded", max_concurrent_tasks=2)
    free = register(client, name="free", max_concurrent_tasks=2)
    act(client, make_task(client, session["id"])["id"], "assign", {"agent_id": loaded["id"]})
    task = make_task(client, session["id"])
    assert act(client, task["id"], "assign").json["assigned_agent_id"] == free["id"]
    client.post(f"/api/v1/agents/{free['id']}/heartbeat", json={"current_load": 90})
    client.post(f"/api/v1/agents/{loaded['id']}/heartbeat", json={"current_load": 10})
    task = make_task(client, session["id"])  # both hold 1 of 2: lower load wins
    assert act(client, task["id"], "assign").json["assigned_agent_id"] == loaded["id"]


def test_assign_when_nothing_fits(client, session):
    task = make_task(client, session["id"], required_capabilities=["SECURITY_AUDIT"])
    assert_error(act(client, task["id"], "assign"), 503, "AGENT_UNAVAILABLE")
    coder = register(client, name="coder")
    response = act(client, task["id"], "assign", {"agent_id": coder["id"]})
    assert_error(response, 503, "AGENT_UNAVAILABLE")
    assert get_task(client, task["id"])["status"] == "PENDING"
    response = act(client, task["id"], "assign", {"agent_id": str(uuid.uuid4())})
    assert_error(response, 404, "AGENT_NOT_FOUND")


def test_assign_respects_capacity_and_load(client, session):
    agent = register(client, max_concurrent_tasks=1)
    act(client, make_task(client, session["id"])["id"], "assign")
    assert_error(
        act(client, make_task(client, session["id"])["id"], "assign"), 503, "AGENT_UNAVAILABLE"
    )
    other = register(client, name="other")
    client.post(f"/api/v1/agents/{other['id']}/heartbeat", json={"current_load": 100})
    assert_error(
        act(client, make_task(client, session["id"])["id"], "assign"), 503, "AGENT_UNAVAILABLE"
    )
    assert client.get(f"/api/v1/agents/{agent['id']}").json["active_tasks"] == 1


@pytest.mark.parametrize("setup", [[], ["start", "pause"]])
def test_assign_only_in_running_sessions(client, agent, setup):
    session = make_session(client)
    for action in setup:
        client.post(f"/api/v1/sessions/{session['id']}/{action}")
    task = make_task(client, session["id"])
    assert_error(act(client, task["id"], "assign"), 400, "INVALID_TRANSITION")


def test_subtasks_and_the_parent_following_them(client, session, agent):
    parent = make_task(client, session["id"], title="parent")
    children = [make_task(client, session["id"], parent_id=parent["id"]) for _ in range(2)]
    got = get_task(client, parent["id"])
    assert got["subtasks"] == [c["id"] for c in children]
    assert_error(act(client, parent["id"], "assign"), 400, "INVALID_TRANSITION")
    for index, child in enumerate(children):
        act(client, child["id"], "assign", {"agent_id": agent["id"]})
        act(client, child["id"], "start")
        assert get_task(client, parent["id"])["status"] == "IN_PROGRESS"
        act(client, child["id"], "complete")
        expected = "COMPLETED" if index == 1 else "IN_PROGRESS"
        assert get_task(client, parent["id"])["status"] == expected
    roots = client.get(f"/api/v1/tasks?session_id={session['id']}&parent_only=true").json
    assert [t["id"] for t in roots["items"]] == [parent["id"]]


def test_progress_pushes_the_deadline(client, session, agent):
    task = _to_status(client, session, agent, "IN_PROGRESS")
    first_deadline = get_task(client, task["id"])["deadline_at"]
    body = act(client, task["id"], "progress", {"progress": 40, "message": "half"}).json
    assert body["progress"] == 40 and body["progress_message"] == "half"
    assert body["deadline_at"] > first_deadline


def test_list_filters_and_pages(client, session, agent):
    other = start_session(client, title="other")
    mine = [make_task(client, session["id"], title=f"t{i}") for i in range(3)]
    make_task(client, other["id"])
    act(client, mine[0]["id"], "assign", {"agent_id": agent["id"]})

    def listed(query):
        return client.get(f"/api/v1/tasks?{query}").json

    body = listed(f"session_id={session['id']}&page_size=2")
    assert [t["id"] for t in body["items"]] == [mine[2]["id"], mine[1]["id"]]
    assert body["total"] == 3 and body["has_more"] is True
    assert listed("status=assigned")["items"][0]["id"] == mine[0]["id"]
    assert listed(f"agent_id={agent['id']}")["total"] == 1
    assert listed("")["total"] == 4
    for bad in ("status=DONE", "session_id=x", "page_size=0", "agent_id=1", "parent_only=maybe"):
        assert_error(client.get(f"/api/v1/tasks?{bad}"), 400, "VALIDATION_ERROR")
