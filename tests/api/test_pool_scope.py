"""Tokens scoped to pools (docs/API.md, "Pools and scoped tokens"), against every route of
the OpenAPI spec: a route added later is walked too, so it cannot forget the check."""

from __future__ import annotations

import re

import pytest

from shared import tokens
from shared.config import DEVELOPMENT_SECRET_KEY
from tests.api.helpers import assert_error, make_task, register, start_session

OWN, FOREIGN = "blue", "red"
PARAM = re.compile(r"{(\w+)}")


def bearer(role="operator", pools=(OWN,), agent_id=None, sub="bob"):
    token = tokens.mint(
        key=DEVELOPMENT_SECRET_KEY,
        role=role,
        sub=None if agent_id else sub,
        agent_id=agent_id,
        pools=pools,
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def foreign(client):
    """One of everything in the pool the scoped tokens may not use."""
    session = start_session(client, pool=FOREIGN)
    webhook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "pool": FOREIGN},
    )
    assert webhook.status_code == 201, webhook.json
    return {
        "session_id": session["id"],
        "task_id": make_task(client, session["id"])["id"],
        "agent_id": register(client, name="foreign-agent", pool=FOREIGN)["id"],
        "webhook_id": webhook.json["id"],
    }


def spec_operations(client):
    for path, operations in client.get("/openapi.json").json["paths"].items():
        if path.startswith("/api/v1"):
            for method in operations:
                if method in ("get", "post", "put", "patch", "delete"):
                    yield path, method


def call(client, method, path, headers, **kwargs):
    return getattr(client, method)(path, headers=headers, **kwargs)


def test_every_route_answers_a_foreign_id_as_if_it_did_not_exist(client, foreign):
    walked = 0
    for path, method in spec_operations(client):
        names = PARAM.findall(path)
        if not names:
            continue
        missing = [n for n in names if n not in foreign]
        assert not missing, f"{path}: add a foreign {missing} to this test's fixture"
        url = PARAM.sub(lambda m: foreign[m.group(1)], path)
        response = call(client, method, url, bearer(), json={})
        assert response.status_code == 404, (method, path, response.json)
        assert response.json["error"]["code"].endswith("NOT_FOUND")
        walked += 1
    assert walked >= 20
    # and nothing of the foreign pool moved
    assert client.get(f"/api/v1/sessions/{foreign['session_id']}").json["status"] == "RUNNING"
    assert client.get(f"/api/v1/tasks/{foreign['task_id']}").json["status"] == "PENDING"
    agent = client.get(f"/api/v1/agents/{foreign['agent_id']}").json
    assert agent["deregistered_at"] is None
    assert client.get(f"/api/v1/webhooks/{foreign['webhook_id']}").status_code == 200


def test_every_other_route_hides_and_refuses_the_foreign_pool(client, foreign):
    start_session(client, pool=OWN)
    before = client.get("/api/v1/sessions", query_string={"pool": FOREIGN}).json["total"]
    for path, method in spec_operations(client):
        if PARAM.search(path):
            continue
        if method == "get":
            seen = call(client, method, path, bearer())
            assert seen.status_code == 200, (path, seen.json)
            for foreign_id in foreign.values():
                assert foreign_id not in seen.get_data(as_text=True), path
            for query in ({"pool": FOREIGN}, {"session_id": foreign["session_id"]}):
                refused = call(client, method, path, bearer(), query_string=query)
                assert refused.status_code in (403, 404), (path, query, refused.json)
        else:
            for body in (
                {"pool": FOREIGN, "title": "x", "name": "x"},
                {"session_id": foreign["session_id"], "title": "x"},
                {"agent_id": foreign["agent_id"]},
            ):
                refused = call(client, method, path, bearer(), json=body)
                assert refused.status_code in (403, 404), (path, body, refused.json)
    after = client.get("/api/v1/sessions", query_string={"pool": FOREIGN}).json["total"]
    assert after == before
    tasks = client.get("/api/v1/tasks", query_string={"session_id": foreign["session_id"]})
    assert tasks.json["total"] == 1


def test_a_scoped_token_works_in_its_own_pool(client):
    created = client.post("/api/v1/sessions", json={"title": "ours"}, headers=bearer())
    assert created.status_code == 201 and created.json["pool"] == OWN
    registered = client.post(
        "/api/v1/agents/register",
        json={"name": "ours", "type": "BACKEND", "capabilities": ["CODE_GENERATION"]},
        headers=bearer(),
    )
    assert registered.status_code == 201 and registered.json["pool"] == OWN
    session_id = created.json["id"]
    assert client.post(f"/api/v1/sessions/{session_id}/start", headers=bearer()).status_code == 200
    task = client.post(
        "/api/v1/tasks", json={"session_id": session_id, "title": "t"}, headers=bearer()
    )
    assert task.status_code == 201
    listed = client.get("/api/v1/tasks", headers=bearer(role="viewer"))
    assert [t["id"] for t in listed.json["items"]] == [task.json["id"]]
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/ours", "event_types": ["task.*"]},
        headers=bearer(),
    )
    assert hook.status_code == 201 and hook.json["pool"] == OWN  # never one of every pool
    listed = client.get("/api/v1/webhooks", headers=bearer()).json["items"]
    assert [h["id"] for h in listed] == [hook.json["id"]]
    # the token the registration handed out is its agent's, in its pool
    agent_token = registered.json["token"]
    claims = tokens.verify(agent_token, key=DEVELOPMENT_SECRET_KEY)
    assert claims.pools == {OWN}
    mine = client.get(
        f"/api/v1/agents/{registered.json['id']}/tasks",
        headers={"Authorization": f"Bearer {agent_token}"},
    )
    assert mine.status_code == 200


def test_a_token_of_several_pools_must_name_one_to_create(client):
    two = bearer(pools=(OWN, "green"))
    refused = client.post("/api/v1/sessions", json={"title": "where?"}, headers=two)
    assert_error(refused, 403, "FORBIDDEN")
    assert "name one of its pools" in refused.json["error"]["message"]
    created = client.post("/api/v1/sessions", json={"title": "x", "pool": "green"}, headers=two)
    assert created.status_code == 201 and created.json["pool"] == "green"


def test_a_registration_token_registers_only_into_its_pools(client):
    registration = bearer(role="agent", sub="ci-fleet")
    body = {"name": "a1", "type": "BACKEND", "capabilities": ["CODE_GENERATION"]}
    refused = client.post(
        "/api/v1/agents/register", json={**body, "pool": FOREIGN}, headers=registration
    )
    assert_error(refused, 403, "FORBIDDEN")
    assert client.get("/api/v1/agents", query_string={"pool": FOREIGN}).json["total"] == 0
    ok = client.post("/api/v1/agents/register", json=body, headers=registration)
    assert ok.status_code == 201 and ok.json["pool"] == OWN


def test_tokens_without_the_claim_keep_their_meaning(client, foreign):
    unscoped = {
        "Authorization": f"Bearer {tokens.mint(key=DEVELOPMENT_SECRET_KEY, role='viewer', sub='v')}"
    }
    seen = client.get(f"/api/v1/sessions/{foreign['session_id']}", headers=unscoped)
    assert seen.status_code == 200 and seen.json["pool"] == FOREIGN


@pytest.mark.parametrize("claim", [[], ["Bad Pool"], "red", [1]])
def test_a_malformed_pools_claim_is_401(client, claim):
    import time

    import jwt

    now = int(time.time())
    token = jwt.encode(
        {"sub": "x", "role": "viewer", "iat": now, "exp": now + 60, "pools": claim},
        DEVELOPMENT_SECRET_KEY,
        algorithm="HS256",
    )
    response = client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "UNAUTHORIZED")
    assert "pools" in response.json["error"]["message"]


def test_the_figures_of_a_scoped_token_count_only_its_pools(client, foreign):
    start_session(client, pool=OWN)
    assert client.get("/api/v1/sessions/statistics").json["total"] == 2  # unscoped: both
    scoped = client.get("/api/v1/sessions/statistics", headers=bearer()).json
    assert scoped["total"] == 1 and scoped["by_status"]["RUNNING"] == 1
    assert client.get("/api/v1/agents/performance").json["total_agents"] == 1
    assert client.get("/api/v1/agents/performance", headers=bearer()).json["total_agents"] == 0
