"""Faults: a worker SIGKILLed in the middle of work, and Redis restarted under a running
stack, lose no task and assign none twice. Real subprocesses: a private Redis server, a
prefork Celery worker and Celery beat started from the Procfile's command lines."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import select

from shared.models import OutboxEvent, Task
from tests.api.helpers import act, make_task, register, start_session
from tests.support.processes import PrivateRedis, kill_group, start, stop
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chaos

PARENTS = 20
PLAIN_TASKS = 150


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


def test_killed_worker_and_restarted_redis_lose_nothing(settings, private_redis, db, tmp_path):
    from orchestrator_api.app import create_app

    fault_settings = settings.with_overrides(redis_url=private_redis.url, sweep_interval_seconds=1)
    api = create_app(fault_settings).test_client()
    env = {"SWEEP_INTERVAL_SECONDS": "1", "WORKER_CONCURRENCY": "2"}

    session = start_session(api)
    agents = [
        register(
            api,
            name=f"fault-{i}",
            capabilities=["CODE_GENERATION", "SYSTEM_DESIGN", "TESTING", "CODE_REVIEW"],
            max_concurrent_tasks=10,
        )
        for i in range(5)
    ]
    parents = [make_task(api, session["id"], title=f"parent {i}") for i in range(PARENTS)]
    for parent in parents:
        assert act(api, parent["id"], "decompose", {"template": "CRUD"}).status_code == 202
    for _ in range(PLAIN_TASKS):
        make_task(api, session["id"])

    worker = start("worker", fault_settings, **env)
    beat = start("beat", fault_settings, CELERY_BEAT_SCHEDULE=str(tmp_path / "beat"), **env)
    try:
        # kill the worker while it is working through the queue
        wait_for(lambda: _count(db, "task.assigned") > 5 or _count(db, "task.decomposed") > 2)
        kill_group(worker)
        worker = start("worker", fault_settings, **env)

        # then Redis dies and comes back while the stack runs and agents work
        _work_some(api, agents, rounds=3)
        private_redis.kill()
        _work_some(api, agents, rounds=2)  # the API keeps serving; its job sends fail
        private_redis.start()

        leaves = PARENTS * 5 + PLAIN_TASKS
        wait_for(
            lambda: _work_some(api, agents, rounds=1) or _completed(db) >= leaves,
            timeout=120,
            interval=0.2,
        )
    finally:
        stop(worker)
        stop(beat)

    tasks = db.scalars(select(Task).where(Task.session_id == session["id"])).all()
    assert all(t.status == "COMPLETED" for t in tasks), Counter(t.status for t in tasks)
    completed = Counter(
        e.payload["task_id"]
        for e in db.scalars(select(OutboxEvent))
        if e.type == "task.status_changed" and e.payload["status"] == "COMPLETED"
    )
    assert set(completed.values()) == {1} and len(completed) == len(tasks)
    assigned = Counter(
        e.payload["task_id"]
        for e in db.scalars(select(OutboxEvent).where(OutboxEvent.type == "task.assigned"))
    )
    assert set(assigned.values()) == {1}
    assert len(assigned) == PARENTS * 5 + PLAIN_TASKS
    subtasks = Counter(t.parent_id for t in tasks if t.parent_id)
    assert set(subtasks.values()) == {5} and len(subtasks) == PARENTS
    assert all(t.attempts == 0 for t in tasks)


def _count(db, event_type):
    db.rollback()
    return len(db.scalars(select(OutboxEvent.id).where(OutboxEvent.type == event_type)).all())


def _completed(db):
    db.rollback()
    return len(
        db.scalars(
            select(Task.id).where(
                Task.status == "COMPLETED", Task.parent_id.is_not(None) | ~Task.has_subtasks
            )
        ).all()
    )


def _work_some(api, agents, rounds):
    """The agents start and complete what they hold."""
    for _ in range(rounds):
        for agent in agents:
            for task in api.get(f"/api/v1/agents/{agent['id']}/tasks").json["items"]:
                if task["status"] == "ASSIGNED":
                    act(api, task["id"], "start", {"agent_id": agent["id"]})
                act(api, task["id"], "complete", {"agent_id": agent["id"]})
            api.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 10})
        time.sleep(0.1)  # the agents' pace between rounds of work
    return False
