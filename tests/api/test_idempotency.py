"""Idempotency-Key on POSTs (CONTRACT section 6)."""

import json
import threading
import time
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


# --- the same JSON is the same request; no secret at rest; keys per identity (issue 12) ---


def post_raw(client, path, data, key, **headers):
    return client.post(
        path,
        data=data,
        headers={"Idempotency-Key": key, "Content-Type": "application/json", **headers},
    )


def test_the_same_json_written_differently_is_the_same_request(client, db):
    first = post_raw(client, "/api/v1/sessions", '{"title":"same","priority":"HIGH"}', "json-1")
    again = post_raw(
        client, "/api/v1/sessions", '{\n  "priority": "HIGH",\n  "title": "same"\n}\n', "json-1"
    )
    assert first.status_code == again.status_code == 201
    assert again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sessions_count(db) == 1
    # an escaped character is the same character; a different value is still a conflict
    same = post_raw(
        client, "/api/v1/sessions", '{"title":"s\\u0061me","priority":"HIGH"}', "json-1"
    )
    assert same.status_code == 201 and same.json["id"] == first.json["id"]
    other = post_raw(client, "/api/v1/sessions", '{"title":"same","priority":"LOW"}', "json-1")
    assert_error(other, 409, "CONFLICT")


def test_a_mismatch_is_a_domain_conflict():
    from shared.errors import Conflict
    from shared.services import idempotency

    assert issubclass(idempotency.Mismatch, Conflict)
    assert idempotency.Mismatch("k").status == 409


def stored_bodies(db):
    db.rollback()
    return db.execute(text("SELECT response_body FROM idempotency_keys")).scalars().all()


def test_a_registration_answer_is_stored_without_its_token(client, db, settings):
    body = {"name": "keyed-agent", "type": "QA", "capabilities": ["TESTING"]}
    first = post(client, "/api/v1/agents/register", body, "register-1")
    assert first.status_code == 201
    (stored,) = stored_bodies(db)
    assert first.json["token"] not in stored
    assert "token" not in json.loads(stored) and json.loads(stored)["id"] == first.json["id"]
    # the repeat gets the agent and a token of its own, freshly minted, never stored
    time.sleep(1.1)  # a token minted in another second differs from the first
    again = post(client, "/api/v1/agents/register", body, "register-1")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert {k: v for k, v in again.json.items() if k != "token"} == {
        k: v for k, v in first.json.items() if k != "token"
    }
    assert again.json["token"] != first.json["token"]
    verified = tokens.verify(again.json["token"], key=settings.secret_key)
    assert str(verified.agent_id) == first.json["id"] and verified.role == "agent"
    assert verified.sub == f"agent:{first.json['id']}"
    assert all(again.json["token"] not in b and "token" not in b for b in stored_bodies(db))


def test_an_agent_named_like_a_person_has_keys_of_its_own(client, settings, db):
    person = f"alice-{uuid.uuid4().hex[:6]}"

    def bearer(token):
        return {"Authorization": f"Bearer {token}"}

    operator = tokens.mint(key=settings.secret_key, sub=person, role="operator")
    body = {"name": person, "type": "QA", "capabilities": ["TESTING"]}
    agent = client.post("/api/v1/agents/register", json=body).json
    own = agent["token"]  # the registration's token: before issue 12, its sub was `person`
    made = post(client, "/api/v1/sessions", {"title": "x"}, "shared", **bearer(operator))
    assert made.status_code == 201
    path = f"/api/v1/agents/{agent['id']}/heartbeat"
    beat = post(client, path, {"current_load": 3}, "shared", **bearer(own))
    assert beat.status_code == 200 and beat.json["current_load"] == 3
    assert "Idempotent-Replayed" not in beat.headers
