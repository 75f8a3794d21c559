"""Pools: agents take only the tasks of their own pool's sessions, whatever the race of
concurrent assignment jobs; lists filter by pool; pool names follow one rule."""

from __future__ import annotations

import threading

from sqlalchemy import select

from shared.models import Task, WorkSession
from shared.services import assignment
from tests.api.helpers import assert_error, make_task, register, start_session
from tests.support.waiting import wait_for


def test_two_pools_with_the_same_capabilities_never_cross(api, db):
    sessions = {pool: start_session(api, pool=pool) for pool in ("red", "blue")}
    agents = {
        pool: [
            register(api, name=f"{pool}-{i}", pool=pool, max_concurrent_tasks=3) for i in range(3)
        ]
        for pool in ("red", "blue")
    }
    for _ in range(12):
        for pool in ("red", "blue"):
            make_task(api, sessions[pool]["id"])

    def assigned() -> int:
        db.rollback()
        return len(db.scalars(select(Task.id).where(Task.status == "ASSIGNED")).all())

    wait_for(lambda: assigned() == 18)
    db.rollback()
    rows = db.execute(
        select(WorkSession.pool, Task.assigned_agent_id)
        .join(WorkSession, WorkSession.id == Task.session_id)
        .where(Task.assigned_agent_id.is_not(None))
    ).all()
    pool_of = {a["id"]: pool for pool, members in agents.items() for a in members}
    assert rows and all(pool_of[str(agent)] == pool for pool, agent in rows)


def test_pools_never_cross_under_concurrent_assignment(api, database, db):
    sessions = {pool: start_session(api, pool=pool) for pool in ("p1", "p2", "p3")}
    for pool in sessions:
        for _ in range(20):
            make_task(api, sessions[pool]["id"])
    agents = {
        pool: [
            register(api, name=f"{pool}-{i}", pool=pool, max_concurrent_tasks=2) for i in range(4)
        ]
        for pool in sessions
    }
    barrier = threading.Barrier(8)

    def assign():
        barrier.wait()
        for _ in range(5):
            with database.transaction() as tx:
                assignment.assign_ready(tx, limit=7)

    threads = [threading.Thread(target=assign) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db.rollback()
    rows = db.execute(
        select(WorkSession.pool, Task.assigned_agent_id)
        .join(WorkSession, WorkSession.id == Task.session_id)
        .where(Task.status == "ASSIGNED")
    ).all()
    pool_of = {a["id"]: pool for pool, members in agents.items() for a in members}
    assert len(rows) == 24  # every agent full: 3 pools x 4 agents x 2
    assert all(pool_of[str(agent)] == pool for pool, agent in rows)


def test_lists_filter_by_pool_and_names_follow_the_rule(api):
    red = start_session(api, pool="team-red")
    start_session(api)
    task = make_task(api, red["id"])
    agent = register(api, name="red-agent", pool="team-red", capabilities=["TESTING"])
    register(api, name="default-agent")
    assert red["pool"] == "team-red" and agent["pool"] == "team-red"
    assert [s["id"] for s in api.get("/api/v1/sessions?pool=team-red").json["items"]] == [red["id"]]
    assert [a["id"] for a in api.get("/api/v1/agents?pool=team-red").json["items"]] == [agent["id"]]
    assert [t["id"] for t in api.get("/api/v1/tasks?pool=team-red").json["items"]] == [task["id"]]
    assert api.get("/api/v1/sessions?pool=default").json["total"] == 1
    for bad in ("", "Red", "a" * 41, "-x", "x y", "x/y"):
        error = assert_error(
            api.post("/api/v1/sessions", json={"title": "t", "pool": bad}), 400, "VALIDATION_ERROR"
        )
        assert "lower-case letters" in error["details"]["pool"][0]
        assert_error(api.get("/api/v1/agents", query_string={"pool": bad}), 400, "VALIDATION_ERROR")
    wrong = api.post(
        f"/api/v1/tasks/{task['id']}/assign", json={"agent_id": register(api, name="d2")["id"]}
    )
    assert_error(wrong, 503, "AGENT_UNAVAILABLE")
    assert "pool" in wrong.json["error"]["message"]
