"""The expiry sweep's two release paths: in bulk, and task by task where a parent follows
its subtasks or the attempt is the last."""

import uuid

from sqlalchemy import text

from shared.services import assignment, sweeps, task_lifecycle
from tests.api.helpers import make_task, register, start_session


def _expire(database, agent_id):
    with database.transaction() as tx:
        tx.execute(
            text("UPDATE agents SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": agent_id},
        )
    with database.transaction() as tx:
        assert sweeps.expire_heartbeats(tx) == 1


def test_expiry_releases_a_subtask_one_by_one(client, database):
    session = start_session(client)
    agent = register(client)
    parent = make_task(client, session["id"])
    child = make_task(client, session["id"], parent_id=parent["id"])
    with database.transaction() as tx:
        assert len(assignment.assign_ready(tx)) == 1
        task_lifecycle.start(tx, task_id=uuid.UUID(child["id"]))
    assert client.get(f"/api/v1/tasks/{parent['id']}").json["status"] == "IN_PROGRESS"
    _expire(database, agent["id"])
    released = client.get(f"/api/v1/tasks/{child['id']}").json
    assert (released["status"], released["attempts"]) == ("PENDING", 1)
    assert client.get(f"/api/v1/tasks/{parent['id']}").json["status"] == "PENDING"
    assert client.get(f"/api/v1/agents/{agent['id']}").json["status"] == "OFFLINE"


def test_expiry_on_a_last_attempt_fails_the_task_and_its_session(client, database):
    session = start_session(client)
    agent = register(client)
    last_try = make_task(client, session["id"])
    with database.transaction() as tx:
        tx.execute(text("UPDATE tasks SET attempts = 2 WHERE id = :id"), {"id": last_try["id"]})
        assert len(assignment.assign_ready(tx)) == 1
    _expire(database, agent["id"])
    failed = client.get(f"/api/v1/tasks/{last_try['id']}").json
    assert (failed["status"], failed["attempts"]) == ("FAILED", 3)
    assert client.get(f"/api/v1/sessions/{session['id']}").json["status"] == "FAILED"


def test_bulk_release_records_events_and_frees_the_task(client, database):
    session = start_session(client)
    agent = register(client)
    plain = make_task(client, session["id"])
    with database.transaction() as tx:
        assignment.assign_ready(tx)
        tx.execute(
            text("UPDATE agents SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": agent["id"]},
        )
    with database.transaction() as tx:
        sweeps.expire_heartbeats(tx)
    released = client.get(f"/api/v1/tasks/{plain['id']}").json
    assert released["status"] == "PENDING" and released["attempts"] == 1
    assert released["assigned_agent_id"] is None and "expired" in released["error"]
    with database.transaction() as tx:
        changes = (
            tx.execute(
                text(
                    "SELECT payload->>'status' FROM outbox_events"
                    " WHERE type = 'task.status_changed' AND payload->>'task_id' = :id"
                    " ORDER BY id"
                ),
                {"id": plain["id"]},
            )
            .scalars()
            .all()
        )
    assert changes == ["ASSIGNED", "PENDING"]
