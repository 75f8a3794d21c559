"""GET /api/v1/tasks/{id}/events: a task's history, as the streams told it."""

from shared import relay
from tests.api.helpers import act, assert_error, make_task, register, start_session


def publish(database, redis):
    relay.publish_once(database, redis, retention=database.settings.event_retention)


def test_a_task_tells_its_history_in_order(client, database, redis):
    session = start_session(client)
    agent = register(client)
    task = make_task(client, session["id"])
    other = make_task(client, session["id"])
    assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    assert act(client, task["id"], "start").status_code == 200
    assert act(client, task["id"], "complete", {"result": {}}).status_code == 200
    publish(database, redis)
    history = client.get(f"/api/v1/tasks/{task['id']}/events").json
    steps = [(e["type"], e["payload"]["status"]) for e in history["items"]]
    assert steps == [
        ("task.created", "PENDING"),
        ("task.status_changed", "ASSIGNED"),
        ("task.assigned", "ASSIGNED"),
        ("task.status_changed", "IN_PROGRESS"),
        ("task.status_changed", "COMPLETED"),
    ]
    assert history["total"] == 5
    ids = [int(e["id"]) for e in history["items"]]
    assert ids == sorted(ids)
    assert all(e["payload"]["task_id"] == task["id"] for e in history["items"])
    assert all(e["timestamp"].endswith("Z") for e in history["items"])
    others = client.get(f"/api/v1/tasks/{other['id']}/events").json["items"]
    assert [e["type"] for e in others] == ["task.created"]


def test_an_unknown_task_has_no_history(client):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(client.get(f"/api/v1/tasks/{missing}/events"), 404, "TASK_NOT_FOUND")
    assert_error(client.get("/api/v1/tasks/nope/events"), 400, "VALIDATION_ERROR")
