"""RATE_LIMIT per client on /api/v1, counted in Redis (CONTRACT section 8), in process.
The limit shared by two gunicorn workers: tests/test_auth_processes.py."""

from __future__ import annotations

import logging
import random
import time

import jwt
import pytest

from shared import tokens
from shared.config import DEVELOPMENT_SECRET_KEY
from tests.api.helpers import assert_error
from tests.support.processes import free_port

LIMIT = 5


def make_app(settings, database, **overrides):
    from orchestrator_api.app import create_app

    flask_app = create_app(settings.with_overrides(rate_limit=f"{LIMIT}/minute", **overrides))
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


@pytest.fixture(scope="module")
def limited_app(settings, database):
    return make_app(settings, database)


def new_address() -> str:
    """A client address of its own, so tests and runs don't share a count."""
    return "10." + ".".join(str(random.randrange(256)) for _ in range(3))


@pytest.fixture
def client(limited_app):
    test_client = limited_app.test_client()
    test_client.environ_base["REMOTE_ADDR"] = new_address()
    return test_client


def bearer(sub, role="viewer"):
    token = tokens.mint(key=DEVELOPMENT_SECRET_KEY, sub=sub, role=role)
    return {"Authorization": f"Bearer {token}"}


def unique_sub() -> str:
    return f"user-{random.getrandbits(48):x}"


def test_the_request_over_the_limit_is_429_with_the_contract_body(client):
    for expected_remaining in range(LIMIT - 1, -1, -1):
        response = client.get("/api/v1/sessions")
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert response.headers["X-RateLimit-Remaining"] == str(expected_remaining)
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
        assert "Retry-After" not in response.headers
    response = client.get("/api/v1/sessions")
    error = assert_error(response, 429, "RATE_LIMITED")
    assert "per client" in error["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_one_budget_across_every_api_route(client):
    for path in ("/api/v1/sessions", "/api/v1/agents", "/api/v1/tasks", "/api/v1/no-such-route"):
        assert client.get(path).status_code in (200, 404)
    assert client.post("/api/v1/sessions", json={"title": "fifth"}).status_code == 201
    response = client.post("/api/v1/sessions", json={"title": "sixth"})
    assert_error(response, 429, "RATE_LIMITED")
    titles = [
        s["title"] for s in client.application.test_client().get("/api/v1/sessions").json["items"]
    ]
    assert "sixth" not in titles  # refused before the view ran


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/docs"])
def test_health_ready_and_docs_are_exempt(client, path):
    for _ in range(LIMIT * 3):
        response = client.get(path)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


def test_the_client_is_the_tokens_sub(limited_app):
    first, second = limited_app.test_client(), limited_app.test_client()
    first.environ_base["REMOTE_ADDR"] = new_address()
    second.environ_base["REMOTE_ADDR"] = new_address()
    alice = bearer(unique_sub())
    # one sub from two addresses: one budget
    for i in range(LIMIT):
        assert (first if i % 2 else second).get(
            "/api/v1/sessions", headers=alice
        ).status_code == 200
    assert_error(first.get("/api/v1/sessions", headers=alice), 429, "RATE_LIMITED")
    # another sub, and the address without a token, have budgets of their own
    assert first.get("/api/v1/sessions", headers=bearer(unique_sub())).status_code == 200
    assert first.get("/api/v1/sessions").status_code == 200


def test_bad_tokens_count_against_the_address(client):
    for _ in range(LIMIT):
        response = client.get("/api/v1/sessions", headers={"Authorization": "Bearer forged"})
        assert_error(response, 401, "UNAUTHORIZED")
    assert_error(client.get("/api/v1/sessions"), 429, "RATE_LIMITED")


def test_redis_down_the_api_keeps_serving(settings, database, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    flask_app = make_app(settings, database, redis_url=dead)
    client = flask_app.test_client()
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    for _ in range(LIMIT):
        assert client.get("/api/v1/sessions").status_code == 200
    assert time.monotonic() - started < 10
    assert "Rate limit storage unreachable" in caplog.text
    # meanwhile each process counts in memory: the limit still holds per process
    assert_error(client.get("/api/v1/sessions"), 429, "RATE_LIMITED")


# --- identities and what a registration token can mint (issue 12) -------------------------


def agent_body(name=None):
    return {"name": name or unique_sub(), "type": "QA", "capabilities": ["TESTING"]}


def test_an_agent_named_like_a_person_has_a_budget_of_its_own(client):
    person = unique_sub()
    registered = client.post(
        "/api/v1/agents/register", json=agent_body(person), headers=bearer(unique_sub(), "admin")
    )
    assert registered.status_code == 201
    agent = registered.json
    for _ in range(LIMIT):
        assert client.get("/api/v1/sessions", headers=bearer(person)).status_code == 200
    assert_error(client.get("/api/v1/sessions", headers=bearer(person)), 429, "RATE_LIMITED")
    own = {"Authorization": f"Bearer {agent['token']}"}
    response = client.get(f"/api/v1/agents/{agent['id']}", headers=own)
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)
    # a token from before the namespace (its sub the agent's name) is keyed by its agent
    now = int(time.time())
    legacy = jwt.encode(
        {"sub": person, "role": "agent", "agent_id": agent["id"], "iat": now, "exp": now + 60},
        DEVELOPMENT_SECRET_KEY,
        algorithm="HS256",
    )
    response = client.get(
        f"/api/v1/agents/{agent['id']}", headers={"Authorization": f"Bearer {legacy}"}
    )
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == str(LIMIT - 2)


def test_a_registration_token_mints_a_bounded_number_of_agents(settings, database):
    flask_app = make_app(settings, database, agent_registration_limit="2/minute")
    client = flask_app.test_client()
    client.environ_base["REMOTE_ADDR"] = new_address()
    registrar = bearer(unique_sub(), "agent")
    for _ in range(2):
        response = client.post("/api/v1/agents/register", json=agent_body(), headers=registrar)
        assert response.status_code == 201
    response = client.post("/api/v1/agents/register", json=agent_body(), headers=registrar)
    error = assert_error(response, 429, "RATE_LIMITED")
    assert "registration" in error["message"]
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # another registration token has its own; an operator (who may act on every agent
    # anyway) only RATE_LIMIT
    other = bearer(unique_sub(), "agent")
    assert (
        client.post("/api/v1/agents/register", json=agent_body(), headers=other).status_code == 201
    )
    operator = bearer(unique_sub(), "operator")
    for _ in range(3):
        response = client.post("/api/v1/agents/register", json=agent_body(), headers=operator)
        assert response.status_code == 201


def test_the_registration_bound_holds_with_redis_down(settings, database):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    flask_app = make_app(settings, database, redis_url=dead, agent_registration_limit="1/minute")
    client = flask_app.test_client()
    registrar = bearer(unique_sub(), "agent")
    assert (
        client.post("/api/v1/agents/register", json=agent_body(), headers=registrar).status_code
        == 201
    )
    response = client.post("/api/v1/agents/register", json=agent_body(), headers=registrar)
    assert "registration" in assert_error(response, 429, "RATE_LIMITED")["message"]


def test_task_log_appends_have_a_budget_of_their_own(settings, database):
    """A chatty command's log never spends the RATE_LIMIT its agent needs for heartbeats
    and moves; its appends are bounded by TASK_LOG_RATE_LIMIT instead."""
    flask_app = make_app(settings, database, task_log_rate_limit="8/minute")
    client = flask_app.test_client()
    client.environ_base["REMOTE_ADDR"] = new_address()
    admin = bearer(unique_sub(), "admin")
    agent = client.post(
        "/api/v1/agents/register", json=agent_body(unique_sub()), headers=admin
    ).json
    own = {"Authorization": f"Bearer {agent['token']}"}
    session = client.post("/api/v1/sessions", json={"title": "logs"}, headers=admin).json
    client.post(f"/api/v1/sessions/{session['id']}/start", headers=admin)
    task = client.post(
        "/api/v1/tasks",
        json={"session_id": session["id"], "title": "t", "required_capabilities": ["TESTING"]},
        headers=admin,
    ).json
    assigned = client.post(
        f"/api/v1/tasks/{task['id']}/assign", json={"agent_id": agent["id"]}, headers=admin
    )
    assert assigned.status_code == 200, assigned.json
    assert client.post(f"/api/v1/tasks/{task['id']}/start", headers=own).status_code == 200
    batch = {"lines": [{"stream": "stdout", "text": "hello"}]}
    for expected_remaining in range(7, -1, -1):
        posted = client.post(f"/api/v1/tasks/{task['id']}/logs", json=batch, headers=own)
        assert posted.status_code == 202, posted.json
        assert posted.headers["X-RateLimit-Limit"] == "8"
        assert posted.headers["X-RateLimit-Remaining"] == str(expected_remaining)
    refused = client.post(f"/api/v1/tasks/{task['id']}/logs", json=batch, headers=own)
    assert "Task log limit" in assert_error(refused, 429, "RATE_LIMITED")["message"]
    # the agent's own budget is untouched by its eight appends: one call spent (start)
    beat = client.post(
        f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 1}, headers=own
    )
    assert beat.status_code == 200
    assert beat.headers["X-RateLimit-Remaining"] == str(LIMIT - 2)
