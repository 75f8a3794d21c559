"""Task logs (docs/API.md, "Task logs"): the holder appends, readers read in order and
resume, the batch limits, the per-task cap with one truncation marker, the task.log event
and the retention prune."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from orchestrator_client.client import printable_text
from shared import tokens
from shared.models import OutboxEvent, Task, TaskLogLine, TaskLogState
from shared.models.types import utcnow
from shared.services import task_logs
from tests.api.helpers import act, assert_error, make_task, start_session

KEY = "production-key-" + "l" * 49


@pytest.fixture(scope="module")
def prod_app(settings, database):
    from orchestrator_api.app import create_app

    flask_app = create_app(
        settings.with_overrides(
            orchestrator_env="production", api_secret_key=KEY, task_log_max_bytes=2048
        )
    )
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


def client_as(prod_app, role="admin", agent_id=None, token=None):
    client = prod_app.test_client()
    token = token or tokens.mint(key=KEY, sub="alice", role=role, agent_id=agent_id)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def admin(prod_app):
    return client_as(prod_app)


def register(admin, name):
    body = {"name": name, "type": "BACKEND", "capabilities": ["CODE_GENERATION"]}
    response = admin.post("/api/v1/agents/register", json=body)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def held(prod_app, admin):
    """A task assigned to agent A (its client), and agent B (another agent's client)."""
    session = start_session(admin)
    a = register(admin, f"logs-a-{uuid.uuid4().hex[:6]}")
    b = register(admin, f"logs-b-{uuid.uuid4().hex[:6]}")
    task = make_task(admin, session["id"])
    assert act(admin, task["id"], "assign", {"agent_id": a["id"]}).status_code == 200
    return {
        "task": task["id"],
        "session": session["id"],
        "a": client_as(prod_app, token=a["token"]),
        "b": client_as(prod_app, token=b["token"]),
    }


def lines(*texts, stream="stdout"):
    return {"lines": [{"stream": stream, "text": text} for text in texts]}


def post(client, task_id, body):
    return client.post(f"/api/v1/tasks/{task_id}/logs", json=body)


def read(client, task_id, **query):
    response = client.get(f"/api/v1/tasks/{task_id}/logs", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def stored_lines(db, task_id):
    return db.scalar(select(func.count()).where(TaskLogLine.task_id == task_id))


def test_the_holder_appends_and_readers_read_in_order_and_resume(held, admin, prod_app):
    task_id, a = held["task"], held["a"]
    first = post(a, task_id, lines("one", "two"))
    assert first.status_code == 202, first.json
    assert first.json == {"accepted": 2, "dropped": 0, "truncated": False, "last_seq": 2}
    body = {
        "lines": [
            {"stream": "STDERR", "text": "three", "at": "2026-11-29T10:00:00Z"},
            {"stream": "stdout", "text": ""},
        ]
    }
    assert post(a, task_id, body).json["last_seq"] == 4

    page = read(admin, task_id)
    assert [(i["seq"], i["stream"], i["text"]) for i in page["items"]] == [
        (1, "stdout", "one"),
        (2, "stdout", "two"),
        (3, "stderr", "three"),
        (4, "stdout", ""),
    ]
    assert page["items"][2]["at"] == "2026-11-29T10:00:00Z"
    assert page["next_after"] == 4 and page["last_seq"] == 4
    assert not page["has_more"] and not page["truncated"] and not page["finished"]

    resumed = read(admin, task_id, after=1, limit=2)
    assert [i["seq"] for i in resumed["items"]] == [2, 3]
    assert resumed["has_more"] and resumed["next_after"] == 3
    assert read(admin, task_id, after=4)["items"] == []
    # a viewer and the holder read too
    assert len(read(client_as(prod_app, "viewer"), task_id)["items"]) == 4
    assert len(read(a, task_id)["items"]) == 4


def test_only_the_holder_writes(held, admin, prod_app, db):
    task_id = held["task"]
    assert_error(post(held["b"], task_id, lines("x")), 403, "FORBIDDEN")
    assert_error(held["b"].get(f"/api/v1/tasks/{task_id}/logs"), 403, "FORBIDDEN")
    for role in ("admin", "operator", "viewer"):
        assert_error(post(client_as(prod_app, role), task_id, lines("x")), 403, "FORBIDDEN")
    # an agent token naming another agent in the body
    other = {**lines("x"), "agent_id": str(uuid.uuid4())}
    assert_error(post(held["a"], task_id, other), 403, "FORBIDDEN")
    assert stored_lines(db, uuid.UUID(task_id)) == 0


def test_a_finished_task_takes_no_more_lines(held, admin, db):
    task_id, a = held["task"], held["a"]
    assert post(a, task_id, lines("before")).status_code == 202
    assert act(a, task_id, "start").status_code == 200
    assert act(a, task_id, "complete", {"result": {}}).status_code == 200
    error = assert_error(post(a, task_id, lines("after")), 409, "CONFLICT")
    assert "COMPLETED" in error["message"]
    page = read(admin, task_id)
    assert [i["text"] for i in page["items"]] == ["before"] and page["finished"]


def test_bad_batches_are_refused_and_change_nothing(held, db):
    task_id, a = held["task"], held["a"]
    too_many = lines(*["x"] * (task_logs.MAX_LINES_PER_BATCH + 1))
    assert_error(post(a, task_id, too_many), 413, "PAYLOAD_TOO_LARGE")
    too_big = lines(*["y" * 1024] * 257)  # 257 KiB of text in 257 lines
    error = assert_error(post(a, task_id, too_big), 413, "PAYLOAD_TOO_LARGE")
    assert str(task_logs.MAX_BATCH_BYTES) in error["message"]
    assert_error(post(a, task_id, lines("a\x00b")), 400, "VALIDATION_ERROR")
    assert_error(post(a, task_id, lines("\ud800")), 400, "VALIDATION_ERROR")
    assert_error(post(a, task_id, {"lines": []}), 400, "VALIDATION_ERROR")
    assert_error(post(a, task_id, lines("z", stream="system")), 400, "VALIDATION_ERROR")
    assert_error(post(a, task_id, {"lines": [{"stream": "stdout"}]}), 400, "VALIDATION_ERROR")
    bad_time = {"lines": [{"stream": "stdout", "text": "t", "at": "yesterday"}]}
    assert_error(post(a, task_id, bad_time), 400, "VALIDATION_ERROR")
    assert_error(post(a, task_id, {"lines": "nope"}), 400, "VALIDATION_ERROR")
    assert_error(post(a, "not-a-uuid", lines("x")), 400, "VALIDATION_ERROR")
    assert stored_lines(db, uuid.UUID(task_id)) == 0


def test_the_client_makes_unstorable_text_storable():
    assert printable_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert printable_text("plain ünïcode ✓") == "plain ünïcode ✓"


def test_past_the_cap_the_rest_is_dropped_with_one_marker(held, admin, db):
    task_id, a = held["task"], held["a"]  # TASK_LOG_MAX_BYTES is 2048 in this app
    assert post(a, task_id, lines("a" * 1000)).json["truncated"] is False
    answer = post(a, task_id, lines("b" * 1000, "c" * 100, "d")).json
    assert answer == {"accepted": 1, "dropped": 2, "truncated": True, "last_seq": 3}
    again = post(a, task_id, lines("e")).json
    assert again == {"accepted": 0, "dropped": 1, "truncated": True, "last_seq": 3}
    page = read(admin, task_id)
    assert [i["stream"] for i in page["items"]] == ["stdout", "stdout", "system"]
    assert "truncated" in page["items"][-1]["text"] and page["truncated"]
    state = db.get(TaskLogState, uuid.UUID(task_id))
    assert (state.bytes, state.last_seq, state.truncated) == (2000, 3, True)


def dev_held_task(client):
    """Development (no token): a task held by an agent, and a body naming that agent."""
    session = start_session(client)
    body = {"name": f"dev-{uuid.uuid4().hex[:6]}", "type": "BACKEND"}
    agent = client.post(
        "/api/v1/agents/register", json={**body, "capabilities": ["CODE_GENERATION"]}
    ).json
    task = make_task(client, session["id"])
    assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    return task, agent


def test_each_batch_is_one_bounded_task_log_event(client, db):
    task, agent = dev_held_task(client)
    as_holder = {"agent_id": agent["id"]}
    post(client, task["id"], {**lines("hello", "world"), **as_holder})
    post(client, task["id"], {**lines(*["x" * 1000] * 40), **as_holder})  # > one event's text
    rows = db.scalars(
        select(OutboxEvent).where(OutboxEvent.type == "task.log").order_by(OutboxEvent.id)
    ).all()
    assert len(rows) == 2
    first, second = (row.payload for row in rows)
    assert first["task_id"] == task["id"] and first["session_id"] == task["session_id"]
    assert first["pool"] == "default"
    assert (first["first_seq"], first["last_seq"], first["more"]) == (1, 2, False)
    assert [line["text"] for line in first["lines"]] == ["hello", "world"]
    assert (second["first_seq"], second["last_seq"], second["more"]) == (3, 42, True)
    assert sum(len(line["text"]) for line in second["lines"]) <= task_logs.EVENT_TEXT_BYTES
    # published (as the relay would), the task's history is its changes, not its log
    db.execute(update(OutboxEvent).values(seq=OutboxEvent.id))
    db.commit()
    history = client.get(f"/api/v1/tasks/{task['id']}/events").json["items"]
    assert history and all(event["type"] != "task.log" for event in history)


def test_development_without_a_token_names_the_holder(client):
    task, agent = dev_held_task(client)
    assert_error(post(client, task["id"], lines("x")), 403, "FORBIDDEN")
    named = {**lines("x"), "agent_id": agent["id"]}
    assert post(client, task["id"], named).status_code == 202
    assert_error(post(client, str(uuid.uuid4()), named), 404, "TASK_NOT_FOUND")
    assert_error(client.get(f"/api/v1/tasks/{uuid.uuid4()}/logs"), 404, "TASK_NOT_FOUND")
    logs = f"/api/v1/tasks/{task['id']}/logs"
    assert_error(client.get(logs + "?after=-1"), 400, "VALIDATION_ERROR")
    assert_error(client.get(logs + "?limit=1001"), 400, "VALIDATION_ERROR")
    assert_error(client.get(logs + "?after=x"), 400, "VALIDATION_ERROR")


def test_retention_prunes_only_logs_of_tasks_finished_long_enough_ago(held, admin, db):
    task_id, a = held["task"], held["a"]
    post(a, task_id, lines("kept for a while"))
    running = make_task(admin, held["session"])
    db.execute(
        update(Task)
        .where(Task.id == uuid.UUID(running["id"]))
        .values(status="IN_PROGRESS", assigned_agent_id=None)
    )
    db.add(TaskLogState(task_id=uuid.UUID(running["id"]), last_seq=1))
    db.add(
        TaskLogLine(task_id=uuid.UUID(running["id"]), seq=1, stream="stdout", text="r", at=utcnow())
    )
    db.commit()
    assert act(a, task_id, "start").status_code == 200
    assert act(a, task_id, "complete", {"result": {}}).status_code == 200

    assert task_logs.prune(db, retention_seconds=3600) == 0  # finished just now
    later = utcnow() + timedelta(seconds=3601)
    assert task_logs.prune(db, retention_seconds=3600, now=later) == 1
    db.commit()
    assert stored_lines(db, uuid.UUID(task_id)) == 0
    assert stored_lines(db, uuid.UUID(running["id"])) == 1  # unfinished: kept
    page = read(admin, task_id)
    assert page["items"] == [] and page["pruned"] and page["last_seq"] == 1
    assert task_logs.prune(db, retention_seconds=3600, now=later) == 0


def test_an_open_append_holds_up_no_lifecycle_move(held, database):
    """Appending locks the log's own count row, never the task row: while an append's
    transaction is open, the task can still be started (which locks the task FOR UPDATE)."""
    from sqlalchemy import text

    from shared.services import task_lifecycle

    task_id = uuid.UUID(held["task"])
    assert post(held["a"], held["task"], lines("first")).status_code == 202
    with database.session() as reading:
        holder = reading.scalar(select(Task.assigned_agent_id).where(Task.id == task_id))
    appending = database.session()
    try:
        answer = task_logs.append(
            appending,
            task_id=task_id,
            agent_id=holder,
            lines=[{"stream": "stdout", "text": "second"}],
            max_bytes=1 << 20,
        )
        assert answer["last_seq"] == 2  # not committed yet: the count row is locked
        with database.transaction() as moving:
            moving.execute(text("SET LOCAL lock_timeout = '2s'"))
            task_lifecycle.start(moving, task_id=task_id, agent_id=holder)
        appending.commit()
    finally:
        appending.close()
    with database.session() as check:
        assert check.get(Task, task_id).status.value == "IN_PROGRESS"
        assert check.get(TaskLogState, task_id).last_seq == 2
