import threading
import uuid

import pytest

from tests.api.helpers import assert_error, make_session

ACTIONS = ["start", "pause", "resume", "cancel", "complete"]


def test_create_applies_defaults_and_returns_every_field(client):
    session = make_session(client)
    assert session["status"] == "PENDING"
    assert session["type"] == "CODING"
    assert session["priority"] == "MEDIUM"
    assert session["initial_prompt"] is None
    assert session["started_at"] is None and session["completed_at"] is None
    assert session["created_at"].endswith("Z")
    assert session["progress"]["total"] == 0
    uuid.UUID(session["id"])


def test_enums_accepted_in_any_case_written_upper(client):
    session = make_session(client, type="review", priority="High", initial_prompt="x" * 10000)
    assert session["type"] == "REVIEW"
    assert session["priority"] == "HIGH"
    fetched = client.get(f"/api/v1/sessions/{session['id']}").json
    assert fetched == session


def test_get_unknown_session(client):
    assert_error(client.get(f"/api/v1/sessions/{uuid.uuid4()}"), 404, "SESSION_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "x" * 201},
        {"title": 5},
        {"title": None},
        {"title": "ok", "type": "PAINTING"},
        {"title": "ok", "priority": "URGENT"},
        {"title": "ok", "initial_prompt": "x" * 10001},
        {"title": "ok", "unknown": 1},
        ["title"],
        "title",
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(client, body):
    error = assert_error(client.post("/api/v1/sessions", json=body), 400, "VALIDATION_ERROR")
    assert error.get("details")
    assert client.get("/api/v1/sessions").json["total"] == 0


def _walk(client, session_id, actions):
    for action in actions:
        response = client.post(f"/api/v1/sessions/{session_id}/{action}")
        assert response.status_code == 200, response.json


# A path from a new session to each status.
PATHS = {
    "PENDING": [],
    "RUNNING": ["start"],
    "PAUSED": ["start", "pause"],
    "COMPLETED": ["start", "complete"],
    "CANCELLED": ["cancel"],
}
ALLOWED = {
    ("PENDING", "start"): "RUNNING",
    ("RUNNING", "pause"): "PAUSED",
    ("PAUSED", "resume"): "RUNNING",
    ("PENDING", "cancel"): "CANCELLED",
    ("RUNNING", "cancel"): "CANCELLED",
    ("PAUSED", "cancel"): "CANCELLED",
    ("RUNNING", "complete"): "COMPLETED",
}


@pytest.mark.parametrize("status", list(PATHS))
@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_from_every_status(client, status, action):
    session_id = make_session(client)["id"]
    _walk(client, session_id, PATHS[status])
    before = client.get(f"/api/v1/sessions/{session_id}").json
    response = client.post(f"/api/v1/sessions/{session_id}/{action}")
    expected = ALLOWED.get((status, action))
    if expected:
        assert response.status_code == 200
        assert response.json["status"] == expected
        if action == "start":
            assert response.json["started_at"]
        if expected in ("COMPLETED", "CANCELLED"):
            assert response.json["completed_at"]
    else:
        error = assert_error(response, 400, "INVALID_TRANSITION")
        assert status in error["message"] and action in error["message"]
        assert client.get(f"/api/v1/sessions/{session_id}").json == before


def test_failed_session_refuses_every_action(client, db):
    from shared.services import sessions

    session_id = make_session(client)["id"]
    sessions.fail(db, session_id=uuid.UUID(session_id), reason="task X failed")
    db.commit()
    body = client.get(f"/api/v1/sessions/{session_id}").json
    assert body["status"] == "FAILED" and body["error"] == "task X failed"
    for action in ACTIONS:
        assert_error(
            client.post(f"/api/v1/sessions/{session_id}/{action}"), 400, "INVALID_TRANSITION"
        )


def test_action_on_unknown_or_malformed_id(client):
    assert_error(client.post(f"/api/v1/sessions/{uuid.uuid4()}/start"), 404, "SESSION_NOT_FOUND")
    error = assert_error(client.post("/api/v1/sessions/not-a-uuid/start"), 400, "VALIDATION_ERROR")
    assert "id" in error["details"]


def test_two_concurrent_actions_never_both_apply(app):
    """Pairs where, whichever applies first, the other is no longer allowed."""
    races = [
        ("start", "start", []),
        ("pause", "complete", ["start"]),
        ("cancel", "complete", ["start"]),
        ("resume", "resume", ["start", "pause"]),
    ]
    for first, second, setup in races * 4:
        client = app.test_client()
        session_id = make_session(client)["id"]
        _walk(client, session_id, setup)
        barrier = threading.Barrier(2)
        results = [None, None]

        def act(index, action, session_id=session_id, barrier=barrier, results=results):
            local = app.test_client()
            barrier.wait()
            results[index] = local.post(f"/api/v1/sessions/{session_id}/{action}")

        threads = [threading.Thread(target=act, args=(i, a)) for i, a in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 400], [r.json for r in results]
        winner = next(r for r in results if r.status_code == 200)
        final = client.get(f"/api/v1/sessions/{session_id}").json
        assert final["status"] == winner.json["status"]


def test_list_is_newest_first_with_the_documented_shape(client):
    ids = [make_session(client, title=f"s{i}")["id"] for i in range(5)]
    body = client.get("/api/v1/sessions?page_size=2").json
    assert set(body) == {"items", "total", "page", "page_size", "has_more"}
    assert [s["id"] for s in body["items"]] == ids[::-1][:2]
    assert (body["total"], body["page"], body["page_size"], body["has_more"]) == (5, 1, 2, True)
    last = client.get("/api/v1/sessions?page_size=2&page=3").json
    assert [s["id"] for s in last["items"]] == [ids[0]] and last["has_more"] is False
    beyond = client.get("/api/v1/sessions?page_size=2&page=4").json
    assert beyond["items"] == [] and beyond["total"] == 5 and beyond["has_more"] is False
    exact = client.get("/api/v1/sessions?page_size=5").json
    assert len(exact["items"]) == 5 and exact["has_more"] is False
    default = client.get("/api/v1/sessions").json
    assert default["page"] == 1 and default["page_size"] == 20


def test_list_filters_by_status(client):
    running = make_session(client, title="a")["id"]
    _walk(client, running, ["start"])
    make_session(client, title="b")
    body = client.get("/api/v1/sessions?status=running").json
    assert [s["id"] for s in body["items"]] == [running] and body["total"] == 1
    assert client.get("/api/v1/sessions?status=PAUSED").json["total"] == 0


@pytest.mark.parametrize(
    "query",
    ["page_size=0", "page_size=101", "page=0", "page=-1", "page=abc", "status=DONE"],
)
def test_bad_list_queries(client, query):
    error = assert_error(client.get(f"/api/v1/sessions?{query}"), 400, "VALIDATION_ERROR")
    assert error["details"]


def test_progress_counts_tasks_by_status(client, db):
    from shared.services import task_creation, task_lifecycle

    session_id = uuid.UUID(make_session(client)["id"])
    first = task_creation.create(db, session_id=session_id, title="one")
    task_creation.create(db, session_id=session_id, title="two", depends_on=[first.id])
    task_creation.create(db, session_id=session_id, title="three")
    db.commit()
    task_lifecycle.cancel(db, task_id=first.id)
    db.commit()
    progress = client.get(f"/api/v1/sessions/{session_id}").json["progress"]
    assert progress["total"] == 3
    assert progress["by_status"]["CANCELLED"] == 2  # the dependent is cancelled with it
    assert progress["by_status"]["PENDING"] == 1
    listed = client.get("/api/v1/sessions").json["items"][0]["progress"]
    assert listed == progress
