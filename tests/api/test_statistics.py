"""GET /sessions/statistics, GET /agents/performance and every agent's own figures
(docs/API.md, "Statistics"), in process on real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from shared import tokens
from shared.enums import AgentType, SessionStatus, TaskStatus
from shared.models import Agent, AgentTaskTotals, Task, TaskFailure, WorkSession
from shared.services import sweeps
from tests.api.helpers import act, assert_error, make_session, make_task, register, start_session

STATS = "/api/v1/sessions/statistics"
PERFORMANCE = "/api/v1/agents/performance"
KEY = "statistics-key-" + "s" * 49
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def session_in(client, db, status: SessionStatus, *, pool="default", created=T0, run_ms=None):
    """A session of that status and creation time; a COMPLETED one ran `run_ms`."""
    session = make_session(client, pool=pool)
    values = {"status": status.value, "created_at": created}
    if run_ms is not None:
        values["started_at"] = created + timedelta(seconds=1)
        values["completed_at"] = values["started_at"] + timedelta(milliseconds=run_ms)
    db.execute(update(WorkSession).where(WorkSession.id == session["id"]).values(**values))
    db.commit()
    return session


def zeros(**counts) -> dict:
    return {**{s.value: 0 for s in SessionStatus}, **counts}


# --- GET /api/v1/sessions/statistics -------------------------------------------------------


def test_no_sessions_gives_zeros_and_nulls(client):
    response = client.get(STATS)
    assert response.status_code == 200, response.json
    assert response.json == {
        "total": 0,
        "by_status": zeros(),
        "avg_completion_time_ms": None,
        "success_rate": None,
    }


def test_session_figures_on_a_crafted_set(client, db):
    session_in(client, db, SessionStatus.PENDING)
    session_in(client, db, SessionStatus.RUNNING)
    session_in(client, db, SessionStatus.RUNNING)
    session_in(client, db, SessionStatus.COMPLETED, run_ms=1000)
    session_in(client, db, SessionStatus.COMPLETED, run_ms=3000)
    session_in(client, db, SessionStatus.COMPLETED, run_ms=5000)
    session_in(client, db, SessionStatus.FAILED)
    session_in(client, db, SessionStatus.CANCELLED)
    # PAUSED has none: still present, zero
    assert client.get(STATS).json == {
        "total": 8,
        "by_status": zeros(PENDING=1, RUNNING=2, COMPLETED=3, FAILED=1, CANCELLED=1),
        "avg_completion_time_ms": 3000.0,
        "success_rate": 0.6,  # 3 completed of 5 finished
    }


def test_no_finished_session_has_a_null_success_rate(client, db):
    session_in(client, db, SessionStatus.RUNNING)
    session_in(client, db, SessionStatus.PAUSED)
    body = client.get(STATS).json
    assert body["total"] == 2
    assert body["by_status"] == zeros(RUNNING=1, PAUSED=1)
    assert body["success_rate"] is None
    assert body["avg_completion_time_ms"] is None


def test_a_session_completed_through_the_api_counts_its_run(client):
    session = start_session(client)
    assert client.post(f"/api/v1/sessions/{session['id']}/complete").status_code == 200
    body = client.get(STATS).json
    assert body["by_status"]["COMPLETED"] == 1
    assert 0 <= body["avg_completion_time_ms"] < 60_000
    assert body["success_rate"] == 1.0


def test_since_counts_sessions_created_at_or_after_it(client, db):
    session_in(client, db, SessionStatus.COMPLETED, created=T0 - timedelta(days=2), run_ms=9000)
    session_in(client, db, SessionStatus.FAILED, created=T0 - timedelta(days=1))
    session_in(client, db, SessionStatus.COMPLETED, created=T0, run_ms=1000)
    session_in(client, db, SessionStatus.PENDING, created=T0 + timedelta(hours=1))

    def stats(since):
        response = client.get(STATS, query_string={"since": since})
        assert response.status_code == 200, response.json
        return response.json

    assert stats("2026-03-01T12:00:00Z") == {
        "total": 2,
        "by_status": zeros(COMPLETED=1, PENDING=1),
        "avg_completion_time_ms": 1000.0,
        "success_rate": 1.0,
    }
    # the same instant with an offset, and without one (UTC)
    assert stats("2026-03-01T14:00:00+02:00")["total"] == 2
    assert stats("2026-03-01T12:00:00")["total"] == 2
    assert stats("2026-03-01T12:00:00.000001Z")["total"] == 1
    assert stats("2026-02-28T00:00:00Z") == {
        "total": 3,
        "by_status": zeros(COMPLETED=1, FAILED=1, PENDING=1),
        "avg_completion_time_ms": 1000.0,
        "success_rate": 0.5,
    }
    assert stats("2030-01-01T00:00:00Z")["total"] == 0
    assert client.get(STATS).json["total"] == 4


def test_pool_counts_that_pools_sessions_only(client, db):
    session_in(client, db, SessionStatus.COMPLETED, pool="team-a", run_ms=2000)
    session_in(client, db, SessionStatus.CANCELLED, pool="team-a", created=T0 - timedelta(days=9))
    session_in(client, db, SessionStatus.COMPLETED, run_ms=8000)
    team_a = client.get(STATS, query_string={"pool": "team-a"}).json
    assert team_a == {
        "total": 2,
        "by_status": zeros(COMPLETED=1, CANCELLED=1),
        "avg_completion_time_ms": 2000.0,
        "success_rate": 0.5,
    }
    both = client.get(STATS, query_string={"pool": "team-a", "since": "2026-03-01T00:00:00Z"})
    assert both.json["by_status"] == zeros(COMPLETED=1)
    assert client.get(STATS, query_string={"pool": "nobody"}).json["total"] == 0
    assert client.get(STATS).json["total"] == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01T00:00:00Z"}, "since"),
        ({"since": ""}, "since"),
        ({"pool": "Bad Pool!"}, "pool"),
        ({"pool": ""}, "pool"),
        ({"status": "RUNNING"}, "status"),  # not a parameter of this route
    ],
)
def test_bad_statistics_queries_are_400(client, query, field):
    error = assert_error(client.get(STATS, query_string=query), 400, "VALIDATION_ERROR")
    assert list(error["details"]) == [field]


def test_a_bad_pool_on_performance_is_400_with_the_rule(client):
    error = assert_error(
        client.get(PERFORMANCE, query_string={"pool": "UPPER"}), 400, "VALIDATION_ERROR"
    )
    assert "lower-case" in error["details"]["pool"][0]
    unknown = client.get(PERFORMANCE, query_string={"since": "2026-01-01T00:00:00Z"})
    assert assert_error(unknown, 400, "VALIDATION_ERROR")["details"] == {
        "since": ["Unknown field."]
    }


# --- each agent's figures: retries, releases, timeouts, cancels, deregistration -------------


def figures(client, agent_id):
    response = client.get(f"/api/v1/agents/{agent_id}")
    assert response.status_code == 200, response.json
    body = response.json
    return body["tasks_completed"], body["tasks_failed"], body["success_rate"]


def take(client, task_id, agent_id, *, start=True):
    assert act(client, task_id, "assign", {"agent_id": agent_id}).status_code == 200
    if start:
        assert act(client, task_id, "start", {"agent_id": agent_id}).status_code == 200


def test_a_new_agent_has_no_figures_yet(client):
    response = client.post(
        "/api/v1/agents/register",
        json={"name": "fresh", "type": "QA", "capabilities": ["TESTING"]},
    )
    assert response.status_code == 201
    assert (response.json["tasks_completed"], response.json["tasks_failed"]) == (0, 0)
    assert response.json["success_rate"] is None
    assert figures(client, response.json["id"]) == (0, 0, None)


def test_a_retried_task_counts_a_failure_for_one_and_a_completion_for_the_other(client):
    session = start_session(client)
    a, b = register(client, "agent-a"), register(client, "agent-b")
    task = make_task(client, session["id"])
    take(client, task["id"], a["id"])
    failed = act(client, task["id"], "fail", {"error": "flaky", "retryable": True})
    assert failed.json["status"] == "PENDING"
    take(client, task["id"], b["id"])
    assert act(client, task["id"], "complete", {"result": {}}).json["status"] == "COMPLETED"
    assert figures(client, a["id"]) == (0, 1, 0.0)
    assert figures(client, b["id"]) == (1, 0, 1.0)
    # A fails again on another task it then completes on its second attempt
    second = make_task(client, session["id"])
    take(client, second["id"], a["id"], start=False)  # fail works from ASSIGNED too
    act(client, second["id"], "fail", {"error": "again"})
    take(client, second["id"], a["id"])
    act(client, second["id"], "complete")
    assert figures(client, a["id"]) == (1, 2, 0.3333)


def test_releases_and_cancels_count_for_nobody_and_timeouts_count(client, db):
    session = start_session(client)
    a, b = register(client, "agent-a"), register(client, "agent-b")
    released, cancelled, timed_out = (make_task(client, session["id"]) for _ in range(3))
    take(client, released["id"], b["id"])
    assert client.delete(f"/api/v1/agents/{b['id']}").status_code == 204  # a release
    assert client.get(f"/api/v1/tasks/{released['id']}").json["status"] == "PENDING"
    assert figures(client, b["id"]) == (0, 0, None)

    take(client, cancelled["id"], a["id"])
    assert act(client, cancelled["id"], "cancel").json["status"] == "CANCELLED"
    assert figures(client, a["id"]) == (0, 0, None)

    take(client, timed_out["id"], a["id"], start=False)
    db.execute(
        update(Task)
        .where(Task.id == timed_out["id"])
        .values(deadline_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    assert sweeps.time_out_tasks(db) == 1  # the start timeout: A's attempt failed
    db.commit()
    assert figures(client, a["id"]) == (0, 1, 0.0)


def test_a_deregistered_agent_keeps_its_figures(client):
    session = start_session(client)
    a = register(client, "agent-a")
    done, failed = make_task(client, session["id"]), make_task(client, session["id"])
    take(client, done["id"], a["id"])
    act(client, done["id"], "complete")
    take(client, failed["id"], a["id"])
    act(client, failed["id"], "fail", {"error": "no", "retryable": True})
    assert client.delete(f"/api/v1/agents/{a['id']}").status_code == 204
    assert figures(client, a["id"]) == (1, 1, 0.5)
    listed = client.get("/api/v1/agents", query_string={"include_deregistered": "true"}).json
    assert [
        (x["tasks_completed"], x["tasks_failed"], x["success_rate"]) for x in listed["items"]
    ] == [(1, 1, 0.5)]
    # its work still counts in the fleet's figures; the agent no longer does
    performance = client.get(PERFORMANCE).json
    assert performance["total_agents"] == 0
    assert performance["total_tasks_completed"] == 1
    assert performance["avg_success_rate"] == 0.5


def test_a_task_failed_for_good_counts_a_failure(client):
    session = start_session(client)
    a = register(client, "agent-a")
    task = make_task(client, session["id"])
    take(client, task["id"], a["id"])
    assert (
        act(client, task["id"], "fail", {"error": "fatal", "retryable": False}).json["status"]
        == "FAILED"
    )
    assert figures(client, a["id"]) == (0, 1, 0.0)


def test_every_agent_answer_carries_the_figures(client):
    session = start_session(client)
    a = register(client, "agent-a")
    task = make_task(client, session["id"])
    take(client, task["id"], a["id"])
    act(client, task["id"], "complete")
    expected = {"tasks_completed": 1, "tasks_failed": 0, "success_rate": 1.0}
    listed = client.get("/api/v1/agents").json["items"][0]
    beat = client.post(f"/api/v1/agents/{a['id']}/heartbeat", json={"current_load": 5})
    replayed = client.post(
        f"/api/v1/agents/{a['id']}/heartbeat",
        json={"current_load": 6},
        headers={"Idempotency-Key": f"beat-{uuid.uuid4()}"},
    )
    for body in (listed, beat.json, replayed.json):
        assert {k: body[k] for k in expected} == expected


# --- GET /api/v1/agents/performance ---------------------------------------------------------


def test_performance_of_an_empty_fleet(client):
    empty = {
        "total_agents": 0,
        "active_agents": 0,
        "avg_success_rate": None,
        "total_tasks_completed": 0,
    }
    assert client.get(PERFORMANCE).json == {
        **empty,
        "by_type": {t.value: empty for t in AgentType},
    }


def test_performance_on_a_crafted_fleet(client, db):
    session = start_session(client)
    backend = register(client, "backend-1", type="BACKEND")
    backend_2 = register(client, "backend-2", type="BACKEND")
    qa = register(client, "qa-1", type="QA", capabilities=["CODE_GENERATION", "TESTING"])
    register(client, "qa-2-offline", type="QA")
    db.execute(update(Agent).where(Agent.name == "qa-2-offline").values(status="OFFLINE"))
    db.commit()
    other_pool = register(client, "elsewhere", type="SECURITY", pool="team-b")
    tasks = [make_task(client, session["id"]) for _ in range(5)]
    # backend-1: 2 completed, 0 failed (1.0); backend-2: 1 completed, 1 failed (0.5);
    # qa-1: 0 completed, 1 failed (0.0)
    for task, agent, outcome in [
        (tasks[0], backend, "complete"),
        (tasks[1], backend, "complete"),
        (tasks[2], backend_2, "fail"),
        (tasks[2], backend_2, "complete"),
        (tasks[3], qa, "fail"),
    ]:
        take(client, task["id"], agent["id"])
        assert act(client, task["id"], outcome, {"error": "e"} if outcome == "fail" else {})
    body = client.get(PERFORMANCE).json
    assert body["total_agents"] == 5
    assert body["active_agents"] == 4  # qa-2 is OFFLINE
    assert body["total_tasks_completed"] == 3
    assert body["avg_success_rate"] == 0.5  # (1.0 + 0.5 + 0.0) / 3, agents with none left out
    assert body["by_type"]["BACKEND"] == {
        "total_agents": 2,
        "active_agents": 2,
        "avg_success_rate": 0.75,
        "total_tasks_completed": 3,
    }
    assert body["by_type"]["QA"] == {
        "total_agents": 2,
        "active_agents": 1,
        "avg_success_rate": 0.0,
        "total_tasks_completed": 0,
    }
    assert body["by_type"]["SECURITY"]["total_agents"] == 1
    assert body["by_type"]["FRONTEND"]["total_agents"] == 0
    team_b = client.get(PERFORMANCE, query_string={"pool": "team-b"}).json
    assert (team_b["total_agents"], team_b["active_agents"]) == (1, 1)
    assert team_b["by_type"]["BACKEND"]["total_agents"] == 0
    assert other_pool["pool"] == "team-b"
    assert client.get(PERFORMANCE, query_string={"pool": "default"}).json["total_agents"] == 4


def test_the_triggered_totals_equal_a_recount(client, db):
    """The fleet summary's table, kept by triggers, against the rows it summarises."""
    session = start_session(client)
    a, b = register(client, "agent-a"), register(client, "agent-b")
    for n in range(4):
        task = make_task(client, session["id"])
        take(client, task["id"], a["id"])
        act(client, task["id"], "fail", {"error": "x"})
        take(client, task["id"], b["id"])
        act(client, task["id"], "complete" if n % 2 else "cancel")
    # a session deleted with its tasks takes their counts with it
    doomed = start_session(client)
    task = make_task(client, doomed["id"])
    take(client, task["id"], b["id"])
    act(client, task["id"], "complete")
    assert client.get(STATS).json["by_status"]["RUNNING"] == 2
    db.execute(text("DELETE FROM sessions WHERE id = :id"), {"id": doomed["id"]})
    db.commit()
    assert client.get(STATS).json["total"] == 1
    totals = {
        row.agent_id: (row.tasks_completed, row.tasks_failed)
        for row in db.scalars(select(AgentTaskTotals))
    }
    completed = dict(
        db.execute(
            select(Task.assigned_agent_id, func.count())
            .where(Task.status == TaskStatus.COMPLETED)
            .group_by(Task.assigned_agent_id)
        ).all()
    )
    failed = dict(
        db.execute(select(TaskFailure.agent_id, func.count()).group_by(TaskFailure.agent_id)).all()
    )
    recount = {
        agent: (completed.get(agent, 0), failed.get(agent, 0)) for agent in completed | failed
    }
    assert {k: v for k, v in totals.items() if v != (0, 0)} == recount
    assert recount == {uuid.UUID(a["id"]): (0, 4), uuid.UUID(b["id"]): (2, 0)}
    assert figures(client, b["id"]) == (2, 0, 1.0)


# --- routes: auth, roles, limits, no collision with /{id} ----------------------------------


@pytest.fixture(scope="module")
def prod_app(settings, database):
    from orchestrator_api.app import create_app

    flask_app = create_app(
        settings.with_overrides(
            orchestrator_env="production", api_secret_key=KEY, rate_limit="1000/minute"
        )
    )
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


def bearer(role, agent_id=None):
    token = tokens.mint(key=KEY, sub=f"{role}-{uuid.uuid4().hex[:8]}", role=role, agent_id=agent_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", [STATS, PERFORMANCE])
def test_the_routes_are_authenticated_role_checked_and_rate_limited(prod_app, path):
    client = prod_app.test_client()
    assert_error(client.get(path), 401, "UNAUTHORIZED")
    for role in ("admin", "operator", "viewer"):
        response = client.get(path, headers=bearer(role))
        assert response.status_code == 200, (role, response.json)
        assert response.headers["X-RateLimit-Limit"] == "1000"
    registered = client.post(
        "/api/v1/agents/register",
        json={"name": f"a-{uuid.uuid4().hex[:6]}", "type": "QA", "capabilities": ["TESTING"]},
        headers=bearer("admin"),
    ).json
    agent_token = {"Authorization": f"Bearer {registered['token']}"}
    assert_error(client.get(path, headers=agent_token), 403, "FORBIDDEN")
    assert_error(client.get(path, headers=bearer("agent")), 403, "FORBIDDEN")
    # its own agent still answers, with its figures
    own = client.get(f"/api/v1/agents/{registered['id']}", headers=agent_token)
    assert own.status_code == 200 and own.json["success_rate"] is None


def test_statistics_and_performance_are_not_ids(client):
    session = make_session(client)
    agent = register(client, "agent-a")
    assert client.get(f"/api/v1/sessions/{session['id']}").json["id"] == session["id"]
    assert client.get(f"/api/v1/agents/{agent['id']}").json["id"] == agent["id"]
    assert "by_status" in client.get(STATS).json
    assert "by_type" in client.get(PERFORMANCE).json
    # the other methods are 405 on the statistics paths, not a bad id (400) or a delete
    for method, path in [("POST", STATS), ("DELETE", STATS), ("DELETE", PERFORMANCE)]:
        response = client.open(path, method=method)
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert_error(client.get("/api/v1/sessions/statistic"), 400, "VALIDATION_ERROR")
    assert_error(client.get("/api/v1/agents/performances"), 400, "VALIDATION_ERROR")
    assert client.get(f"/api/v1/agents/{agent['id']}").json["deregistered_at"] is None


def test_the_spec_describes_both_routes(client):
    spec = client.get("/openapi.json").json
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    stats = paths[STATS]["get"]
    assert {p["name"] for p in stats["parameters"]} >= {"pool", "since"}
    assert {"200", "400", "401", "403", "429"} <= set(stats["responses"])
    performance = paths[PERFORMANCE]["get"]["responses"]["200"]["content"]["application/json"]
    assert performance["schema"]["$ref"].endswith("/AgentPerformance")
    assert "by_type" in schemas["AgentPerformance"]["properties"]
    assert {"tasks_completed", "tasks_failed", "success_rate"} <= set(
        schemas["Agent"]["properties"]
    )
