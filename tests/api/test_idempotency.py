"""Idempotency-Key on POSTs (CONTRACT section 6)."""

import threading
import uuid

import pytest
from sqlalchemy import func, select, text

from shared import tokens
from shared.models import WorkSession
from tests.api.helpers import assert_error, make_task, register, start_session


def sessions_count(db):
    db.rollback()
    return db.scalar(select(func.count()).select_from(WorkSession))


def post(client, path, body, key, **headers):
    return client.post(path, json=body, headers={"Idempotency-Key": key, **headers})


def test_a_repeat_gets_the_first_answer_and_changes_nothing(client, db):
    first = post(client, "/api/v1/sessions", {"title": "once"}, "key-1")
    again = post(client, "/api/v1/sessions", {"title": "once"}, "key-1")
    assert first.status_code == again.status_code == 201
    assert again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sessions_count(db) == 1


def test_the_same_key_with_another_body_is_a_conflict(client, db):
    post(client, "/api/v1/sessions", {"title": "one"}, "key-2")
    assert_error(post(client, "/api/v1/sessions", {"title": "two"}, "key-2"), 409, "CONFLICT")
    assert sessions_count(db) == 1


def test_the_same_key_on_another_route_is_a_conflict(client):
    session = post(client, "/api/v1/sessions", {"title": "one"}, "key-3").json
    response = post(client, f"/api/v1/sessions/{session['id']}/start", {}, "key-3")
    assert_error(response, 409, "CONFLICT")


def test_keys_belong_to_their_client(client, settings, db):
    def bearer(sub):
        token = tokens.mint(key=settings.secret_key, sub=sub, role="operator")
        return {"Authorization": f"Bearer {token}"}

    a = post(client, "/api/v1/sessions", {"title": "x"}, "shared-key", **bearer("alice"))
    b = post(client, "/api/v1/sessions", {"title": "x"}, "shared-key", **bearer("bob"))
    assert a.status_code == b.status_code == 201 and a.json["id"] != b.json["id"]
    assert sessions_count(db) == 2


def test_errors_are_not_stored_so_a_retry_runs_again(client):
    session = start_session(client)
    task = make_task(client, session["id"])
    path = f"/api/v1/tasks/{task['id']}/assign"
    assert_error(post(client, path, {}, "assign-1"), 503, "AGENT_UNAVAILABLE")
    register(client)
    retried = post(client, path, {}, "assign-1")
    assert retried.status_code == 200 and retried.json["status"] == "ASSIGNED"


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\there", "é"])
def test_bad_keys(client, db, key):
    response = client.post(
        "/api/v1/sessions", json={"title": "x"}, headers={"Idempotency-Key": key}
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert sessions_count(db) == 0


def test_concurrent_repeats_create_once(app, db):
    barrier = threading.Barrier(6)
    answers = []

    def send():
        local = app.test_client()
        barrier.wait()
        answers.append(post(local, "/api/v1/sessions", {"title": "race"}, "race-key"))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {201}
    assert len({a.json["id"] for a in answers}) == 1
    assert sessions_count(db) == 1


def test_a_key_older_than_a_day_runs_again(client, db, database):
    first = post(client, "/api/v1/sessions", {"title": "old"}, "old-key").json
    with database.transaction() as tx:
        tx.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    again = post(client, "/api/v1/sessions", {"title": "old"}, "old-key")
    assert again.status_code == 201 and again.json["id"] != first["id"]


def test_old_keys_are_pruned(client, database):
    from shared.services import idempotency

    post(client, "/api/v1/sessions", {"title": "x"}, f"k-{uuid.uuid4()}")
    with database.transaction() as tx:
        assert idempotency.prune(tx) == 0
        tx.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
        assert idempotency.prune(tx) == 1
