import uuid

import pytest

from tests.api.helpers import act, assert_error, make_task, register, start_session


def test_register_returns_an_idle_agent(client):
    agent = register(client, capabilities=["code_generation", "Testing"], max_concurrent_tasks=3)
    assert agent["status"] == "IDLE"
    assert agent["current_load"] == 0 and agent["active_tasks"] == 0
    assert agent["capabilities"] == ["CODE_GENERATION", "TESTING"]
    assert agent["max_concurrent_tasks"] == 3
    assert agent["last_heartbeat_at"].endswith("Z")
    assert client.get(f"/api/v1/agents/{agent['id']}").json == agent


def test_default_capacity_is_five(client):
    assert register(client)["max_concurrent_tasks"] == 5


def test_name_taken(client):
    register(client, name="dup")
    assert_error(
        client.post(
            "/api/v1/agents/register",
            json={"name": "dup", "type": "QA", "capabilities": ["TESTING"]},
        ),
        409,
        "AGENT_NAME_TAKEN",
    )
    assert client.get("/api/v1/agents").json["total"] == 1


def test_a_deregistered_agent_is_kept_as_a_record_and_its_name_is_free(client):
    agent = register(client, name="again")
    assert client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    record = client.get(f"/api/v1/agents/{agent['id']}").json
    assert record["status"] == "OFFLINE" and record["deregistered_at"]
    successor = register(client, name="again")
    assert successor["id"] != agent["id"] and successor["deregistered_at"] is None
    assert_error(client.delete(f"/api/v1/agents/{agent['id']}"), 404, "AGENT_NOT_FOUND")
    heartbeat = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 1})
    assert_error(heartbeat, 404, "AGENT_NOT_FOUND")
    assert client.get(f"/api/v1/agents/{agent['id']}").json["status"] == "OFFLINE"
    listed = client.get("/api/v1/agents").json["items"]
    assert [a["id"] for a in listed] == [successor["id"]]
    everyone = client.get("/api/v1/agents?include_deregistered=true").json["items"]
    assert {a["id"] for a in everyone} == {agent["id"], successor["id"]}
    assert client.get("/api/v1/agents?status=OFFLINE").json["items"] == []


def test_a_deregistered_agents_token_is_401(client):
    body = {"name": "gone", "type": "QA", "capabilities": ["TESTING"]}
    registered = client.post("/api/v1/agents/register", json=body).json
    as_agent = {"Authorization": f"Bearer {registered['token']}"}
    own = f"/api/v1/agents/{registered['id']}"
    assert client.get(own, headers=as_agent).status_code == 200
    assert client.delete(own, headers=as_agent).status_code == 204
    for method, path in (("GET", own), ("POST", f"{own}/heartbeat"), ("GET", f"{own}/tasks")):
        answer = client.open(path, method=method, headers=as_agent, json={"current_load": 1})
        error = assert_error(answer, 401, "UNAUTHORIZED")
        assert "deregistered" in error["message"]


def test_finished_tasks_keep_who_did_them_after_deregistration(client):
    session = start_session(client)
    agent = register(client, name="doer")
    done = make_task(client, session["id"])
    held = make_task(client, session["id"])
    for task in (done, held):
        assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    assert act(client, done["id"], "start").status_code == 200
    assert act(client, done["id"], "complete", {"result": {"ok": 1}}).status_code == 200
    assert client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    assert client.get(f"/api/v1/tasks/{done['id']}").json["assigned_agent_id"] == agent["id"]
    released = client.get(f"/api/v1/tasks/{held['id']}").json
    assert released["status"] == "PENDING" and released["assigned_agent_id"] is None
    assert "doer deregistered" in released["error"]
    assert client.get(f"/api/v1/tasks?agent_id={agent['id']}").json["total"] == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"type": "WIZARD"},
        {"capabilities": []},
        {"capabilities": ["CODE_GENERATION", "code_generation"]},
        {"capabilities": ["FLYING"]},
        {"capabilities": "CODE_GENERATION"},
        {"max_concurrent_tasks": 0},
        {"max_concurrent_tasks": 101},
        {"max_concurrent_tasks": "5"},
        {"max_concurrent_tasks": 2.5},
        {"max_concurrent_tasks": True},
    ],
)
def test_bad_registrations(client, changes):
    body = {"name": "a", "type": "BACKEND", "capabilities": ["CODE_GENERATION"], **changes}
    error = assert_error(client.post("/api/v1/agents/register", json=body), 400, "VALIDATION_ERROR")
    assert set(error["details"]) <= set(body)
    assert client.get("/api/v1/agents").json["total"] == 0


@pytest.mark.parametrize("load", [101, -1, "abc", None, 50.5, True])
def test_bad_heartbeats_change_nothing(client, load):
    agent = register(client)
    response = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": load})
    assert_error(response, 400, "VALIDATION_ERROR")
    assert client.get(f"/api/v1/agents/{agent['id']}").json == agent


def test_heartbeat_missing_load(client):
    agent = register(client)
    assert_error(
        client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={}), 400, "VALIDATION_ERROR"
    )


def test_heartbeat_updates_load_time_and_status(client):
    agent = register(client)
    beat = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 40}).json
    assert beat["current_load"] == 40 and beat["status"] == "IDLE"
    assert beat["last_heartbeat_at"] > agent["last_heartbeat_at"]
    full = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 100}).json
    assert full["status"] == "BUSY"
    assert client.get(f"/api/v1/agents/{agent['id']}").json == full


def test_heartbeat_unknown_agent(client):
    response = client.post(f"/api/v1/agents/{uuid.uuid4()}/heartbeat", json={"current_load": 1})
    assert_error(response, 404, "AGENT_NOT_FOUND")
    assert_error(
        client.post("/api/v1/agents/nope/heartbeat", json={"current_load": 1}),
        400,
        "VALIDATION_ERROR",
    )


def test_offline_agent_comes_back_with_a_heartbeat(client, db):
    from shared.enums import AgentStatus
    from shared.models import Agent

    agent = register(client)
    db.get(Agent, uuid.UUID(agent["id"])).status = AgentStatus.OFFLINE
    db.commit()
    beat = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 0}).json
    assert beat["status"] == "IDLE"


def test_status_follows_held_tasks(client):
    session = start_session(client)
    agent = register(client, max_concurrent_tasks=2)
    first = make_task(client, session["id"])
    second = make_task(client, session["id"])
    assert act(client, first["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    held_one = client.get(f"/api/v1/agents/{agent['id']}").json
    assert (held_one["status"], held_one["active_tasks"]) == ("ACTIVE", 1)
    assert act(client, second["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    held_two = client.get(f"/api/v1/agents/{agent['id']}").json
    assert (held_two["status"], held_two["active_tasks"]) == ("BUSY", 2)
    act(client, first["id"], "start")
    act(client, first["id"], "complete", {"result": {}})
    after = client.get(f"/api/v1/agents/{agent['id']}").json
    assert (after["status"], after["active_tasks"]) == ("ACTIVE", 1)
    tasks = client.get(f"/api/v1/agents/{agent['id']}/tasks").json
    assert [t["id"] for t in tasks["items"]] == [second["id"]]


def test_list_filters(client):
    backend = register(client, name="b", capabilities=["CODE_GENERATION", "DEBUGGING"])
    qa = register(client, name="q", type="QA", capabilities=["TESTING"], max_concurrent_tasks=1)
    busy = register(client, name="z", type="QA", capabilities=["TESTING"])
    client.post(f"/api/v1/agents/{busy['id']}/heartbeat", json={"current_load": 100})

    def ids(query):
        body = client.get(f"/api/v1/agents?{query}").json
        return {a["id"] for a in body["items"]}

    assert ids("capability=debugging") == {backend["id"]}
    assert ids("capability=TESTING") == {qa["id"], busy["id"]}
    assert ids("type=qa") == {qa["id"], busy["id"]}
    assert ids("status=BUSY") == {busy["id"]}
    assert ids("available_only=true") == {backend["id"], qa["id"]}
    assert ids("available_only=false") == {backend["id"], qa["id"], busy["id"]}
    session = start_session(client)
    task = make_task(client, session["id"], required_capabilities=["TESTING"])
    act(client, task["id"], "assign", {"agent_id": qa["id"]})
    assert ids("available_only=true") == {backend["id"]}
    page = client.get("/api/v1/agents?page_size=2").json
    assert page["total"] == 3 and page["has_more"] is True and len(page["items"]) == 2


@pytest.mark.parametrize(
    "query", ["capability=FLYING", "status=ASLEEP", "type=X", "page_size=101", "page=0"]
)
def test_bad_list_queries(client, query):
    assert_error(client.get(f"/api/v1/agents?{query}"), 400, "VALIDATION_ERROR")


def test_deregister_returns_held_tasks_to_pending(client):
    session = start_session(client)
    agent = register(client)
    task = make_task(client, session["id"])
    act(client, task["id"], "assign", {"agent_id": agent["id"]})
    act(client, task["id"], "start")
    assert client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    after = client.get(f"/api/v1/tasks/{task['id']}").json
    assert after["status"] == "PENDING"
    assert after["assigned_agent_id"] is None
    assert after["attempts"] == 1
    assert_error(client.delete(f"/api/v1/agents/{agent['id']}"), 404, "AGENT_NOT_FOUND")


def test_unknown_agent_tasks(client):
    assert_error(client.get(f"/api/v1/agents/{uuid.uuid4()}/tasks"), 404, "AGENT_NOT_FOUND")


def test_concurrent_heartbeats_each_answer_for_their_own_agent(app, client, db):
    """Heartbeats that arrive together share one transaction (group commit); each caller
    still gets its own agent, at its own load, and each heartbeat records its event."""
    import threading

    from sqlalchemy import func, select

    from shared.models import OutboxEvent

    agents = [register(client, name=f"beating-{n}")["id"] for n in range(8)]
    unknown = str(uuid.uuid4())
    answers: dict[tuple[str, int], tuple[int, dict]] = {}

    def beat(agent_id: str, rounds: int) -> None:
        own_client = app.test_client()
        for load in range(rounds):
            response = own_client.post(
                f"/api/v1/agents/{agent_id}/heartbeat", json={"current_load": load}
            )
            answers[(agent_id, load)] = (response.status_code, response.json)

    threads = [threading.Thread(target=beat, args=(a, 10)) for a in [*agents, unknown]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for agent_id in agents:
        for load in range(10):
            status, body = answers[(agent_id, load)]
            assert status == 200, body
            assert (body["id"], body["current_load"]) == (agent_id, load)
        assert client.get(f"/api/v1/agents/{agent_id}").json["current_load"] == 9
    for load in range(10):
        status, body = answers[(unknown, load)]
        assert (status, body["error"]["code"]) == (404, "AGENT_NOT_FOUND")
    beats = db.scalar(
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == "agent.heartbeat")
    )
    assert beats == 8 * 10


def test_a_heartbeat_with_an_idempotency_key_is_replayed(client):
    agent = register(client)
    headers = {"Idempotency-Key": "beat-1"}
    url = f"/api/v1/agents/{agent['id']}/heartbeat"
    first = client.post(url, json={"current_load": 30}, headers=headers)
    client.post(url, json={"current_load": 50})
    again = client.post(url, json={"current_load": 30}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert client.get(url.removesuffix("/heartbeat")).json["current_load"] == 50


def test_agent_events_carry_the_tasks_held(client, db):
    from sqlalchemy import select

    from shared.models import OutboxEvent

    session = start_session(client)
    agent = register(client, max_concurrent_tasks=2)
    task = make_task(client, session["id"])
    assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 100})

    def payloads(event_type):
        return [
            e.payload
            for e in db.scalars(
                select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
            )
            if e.payload.get("agent_id") == agent["id"]
        ]

    assert payloads("agent.registered")[0]["active_tasks"] == 0
    changes = payloads("agent.status_changed")
    assert [(c["status"], c["active_tasks"]) for c in changes] == [("ACTIVE", 1), ("BUSY", 1)]
    assert payloads("agent.heartbeat")[-1] == {
        "agent_id": agent["id"],
        "status": "BUSY",
        "current_load": 100,
        "active_tasks": 1,
        "pool": "default",
    }
