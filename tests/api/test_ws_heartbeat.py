"""Heartbeats on an agent's own stream (`/ws/agents/{id}`): the meaning and validation of
POST /api/v1/agents/{id}/heartbeat, answered by a `heartbeat.ack` frame or an error frame;
on `web` and on the `gateway`, in production (tokens)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from orchestrator_client.ws_client import Client
from shared import tokens
from tests.support.live_server import live_server_fixture

KEY = "h" * 48

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

live = live_server_fixture(
    worker=False,
    gateway=True,
    ORCHESTRATOR_ENV="production",
    API_SECRET_KEY=KEY,
    WS_MAX_CONNECTIONS_PER_CLIENT="20",
)


def token(role: str = "admin") -> str:
    return tokens.mint(key=KEY, role=role, sub=f"user-{uuid.uuid4()}")


def api(base: str, method: str, path: str, bearer: str, body: dict | None = None):
    return requests.request(
        method,
        f"{base}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )


def register(base: str) -> dict:
    name = f"hb-{uuid.uuid4()}"
    body = {"name": name, "type": "QA", "capabilities": ["TESTING"]}
    answer = api(base, "POST", "/agents/register", token(), body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def stream(base: str, agent_id: str, bearer: str) -> Client:
    return Client.connect(
        base.replace("http", "ws") + f"/ws/agents/{agent_id}",
        headers={"Authorization": f"Bearer {bearer}"},
    )


def answer_to(client: Client, message, timeout: float = 10) -> dict:
    """The first frame after `message` that is not a stream event (those have an id)."""
    client.send(message if isinstance(message, str) else json.dumps(message))
    while True:
        raw = client.receive(timeout=timeout)
        assert raw is not None, f"no answer to {message!r}"
        frame = json.loads(raw)
        if "id" not in frame:
            return frame


def agent(base: str, agent_id: str) -> dict:
    return api(base, "GET", f"/agents/{agent_id}", token()).json()


def test_a_heartbeat_on_the_stream_is_acknowledged_with_the_agent(live):
    registered = register(live)
    client = stream(live, registered["id"], registered["token"])
    before = agent(live, registered["id"])
    ack = answer_to(client, {"type": "heartbeat", "current_load": 40})
    assert ack["type"] == "heartbeat.ack"
    assert ack["payload"]["id"] == registered["id"]
    assert ack["payload"]["current_load"] == 40
    assert ack["payload"]["status"] == "IDLE"
    # the HTTP answer's fields, computed the same way
    over_http = api(
        live,
        "POST",
        f"/agents/{registered['id']}/heartbeat",
        registered["token"],
        {"current_load": 40},
    ).json()
    assert set(ack["payload"]) == set(over_http)
    assert ack["payload"]["last_heartbeat_at"] > before["last_heartbeat_at"]
    full = answer_to(client, {"type": "heartbeat", "current_load": 100})
    assert (full["payload"]["current_load"], full["payload"]["status"]) == (100, "BUSY")
    after = agent(live, registered["id"])
    assert (after["current_load"], after["status"]) == (100, "BUSY")
    client.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "heartbeat", "current_load": 101},
        {"type": "heartbeat", "current_load": -1},
        {"type": "heartbeat", "current_load": "50"},
        {"type": "heartbeat", "current_load": 5.5},
        {"type": "heartbeat"},
        {"type": "heartbeat", "current_load": 5, "status": "IDLE"},
    ],
)
def test_a_bad_heartbeat_gets_an_error_frame_and_changes_nothing(live, message):
    registered = register(live)
    client = stream(live, registered["id"], registered["token"])
    before = agent(live, registered["id"])
    error = answer_to(client, message)
    assert error["type"] == "error"
    assert error["payload"]["code"] == "VALIDATION_ERROR"
    assert error["payload"]["details"]
    assert agent(live, registered["id"]) == before
    # the stream goes on
    assert answer_to(client, {"type": "heartbeat", "current_load": 1})["type"] == "heartbeat.ack"
    client.close()


def test_only_the_agent_an_admin_or_an_operator_may_heartbeat_on_the_stream(live):
    registered = register(live)
    before = agent(live, registered["id"])
    viewer = stream(live, registered["id"], token("viewer"))
    refused = answer_to(viewer, {"type": "heartbeat", "current_load": 30})
    assert (refused["type"], refused["payload"]["code"]) == ("error", "FORBIDDEN")
    assert agent(live, registered["id"]) == before
    viewer.close()
    for role in ("operator", "admin"):
        client = stream(live, registered["id"], token(role))
        ack = answer_to(client, {"type": "heartbeat", "current_load": 30})
        assert ack["type"] == "heartbeat.ack", ack
        client.close()


def test_a_deregistered_agent_gets_not_found_on_its_open_stream(live):
    registered = register(live)
    client = stream(live, registered["id"], token("operator"))
    assert api(live, "DELETE", f"/agents/{registered['id']}", token()).status_code == 204
    error = answer_to(client, {"type": "heartbeat", "current_load": 10})
    assert (error["type"], error["payload"]["code"]) == ("error", "AGENT_NOT_FOUND")
    assert agent(live, registered["id"])["status"] == "OFFLINE"
    client.close()


def test_other_messages_are_answered_not_fatal(live):
    registered = register(live)
    client = stream(live, registered["id"], registered["token"])
    assert answer_to(client, {"type": "ping"})["type"] == "pong"
    assert answer_to(client, "ping")["type"] == "pong"
    other = answer_to(client, {"type": "status", "current_load": 10})
    assert (other["type"], other["payload"]["code"]) == ("error", "VALIDATION_ERROR")
    assert answer_to(client, "[1, 2]")["type"] == "error"
    assert answer_to(client, "x" * 5000)["type"] == "error"
    assert answer_to(client, {"type": "heartbeat", "current_load": 2})["type"] == "heartbeat.ack"
    client.close()
    # elsewhere, a heartbeat means nothing: the other streams are one-way
    sessions = Client.connect(
        live.replace("http", "ws") + "/ws/sessions",
        headers={"Authorization": f"Bearer {token()}"},
    )
    error = answer_to(sessions, {"type": "heartbeat", "current_load": 2})
    assert error["type"] == "error" and "one-way" in error["payload"]["message"]
    sessions.close()
