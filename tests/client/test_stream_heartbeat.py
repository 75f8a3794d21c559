"""Heartbeats on the agent's stream from the Python client: EventStream.heartbeat, and the
reference agent using it while its stream is up and HTTP otherwise; against a live server."""

from __future__ import annotations

import threading
import uuid

import pytest

from orchestrator_client import OrchestratorClient
from orchestrator_client.agent import ReferenceAgent
from orchestrator_client.errors import ConnectionFailed, ValidationError
from orchestrator_client.runner import CommandRunner
from tests.support.live_server import live_server_fixture
from tests.support.processes import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

live = live_server_fixture(worker=False, WS_MAX_CONNECTIONS_PER_CLIENT="50")


@pytest.fixture
def api(live):
    client = OrchestratorClient(live, retries=2, backoff=0.1)
    yield client
    client.close()


def test_a_heartbeat_on_the_event_stream_returns_the_agent(api):
    agent = api.register_agent(f"hb-{uuid.uuid4()}", "QA", ["TESTING"])
    stream = api.events(f"/ws/agents/{agent['id']}")
    with pytest.raises(ConnectionFailed):
        stream.heartbeat(10)  # not connected yet
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    reader.start()
    try:
        wait_for(stream.connected.is_set)
        acknowledged = stream.heartbeat(30)
        assert (acknowledged["id"], acknowledged["current_load"]) == (agent["id"], 30)
        assert api.get_agent(agent["id"])["current_load"] == 30
        with pytest.raises(ValidationError) as refused:
            stream.heartbeat(101)
        assert "current_load" in refused.value.details
        assert api.get_agent(agent["id"])["current_load"] == 30
        assert stream.heartbeat(0)["current_load"] == 0
    finally:
        stream.close()
        reader.join(timeout=10)
    assert not [e for e in events if e.get("type") in ("heartbeat.ack", "error")]


def test_the_reference_agent_heartbeats_on_its_stream_while_it_is_up(api):
    agent = ReferenceAgent(api, f"hb-agent-{uuid.uuid4()}", ["TESTING"], heartbeat_seconds=0.2)
    agent.start()
    try:
        wait_for(lambda: agent.heartbeats["stream"] >= 5)
        # the first one may go before the stream is up; after that, none over HTTP
        assert agent.heartbeats["http"] <= 1
        registered_at = api.get_agent(agent.id)["created_at"]
        assert api.get_agent(agent.id)["last_heartbeat_at"] > registered_at
    finally:
        agent.stop()


def test_the_reference_agent_heartbeats_over_http_without_a_stream(api, live):
    no_streams = OrchestratorClient(live, ws_url=f"ws://127.0.0.1:{free_port()}")
    agent = ReferenceAgent(
        no_streams, f"hb-http-{uuid.uuid4()}", ["TESTING"], heartbeat_seconds=0.2
    )
    agent.start()
    try:
        wait_for(lambda: agent.heartbeats["http"] >= 3)
        assert agent.heartbeats["stream"] == 0
        registered_at = api.get_agent(agent.id)["created_at"]
        assert api.get_agent(agent.id)["last_heartbeat_at"] > registered_at
    finally:
        agent.stop()


def test_the_exec_runner_heartbeats_on_its_stream(api):
    runner = CommandRunner(
        api, f"hb-runner-{uuid.uuid4()}", ["TESTING"], command="true", heartbeat_seconds=0.2
    )
    runner.start()
    try:
        wait_for(lambda: runner.heartbeats["stream"] >= 3)
        assert runner.heartbeats["http"] <= 1
    finally:
        runner.stop()
