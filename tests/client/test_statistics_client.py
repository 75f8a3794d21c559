"""The client's statistics methods against a real gunicorn server: session_statistics
(pool, since as a datetime or a string) and agent_performance (pool), and a bad pool as
the contract's exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator_client import OrchestratorClient, ValidationError
from tests.support.processes import running_web


@pytest.fixture
def api(settings):
    with running_web(settings) as base_url:
        client = OrchestratorClient(base_url, retries=2, backoff=0.1)
        yield client
        client.close()


def test_session_statistics(api):
    before = datetime.now(UTC) - timedelta(seconds=5)
    api.create_session("a", pool="stats-a")
    done = api.start_session(api.create_session("b", pool="stats-a")["id"])
    api.complete_session(done["id"])
    api.create_session("c")

    everything = api.session_statistics()
    assert everything["total"] == 3
    assert everything["by_status"] == {
        "PENDING": 2,
        "RUNNING": 0,
        "PAUSED": 0,
        "COMPLETED": 1,
        "FAILED": 0,
        "CANCELLED": 0,
    }
    assert everything["success_rate"] == 1.0
    assert everything["avg_completion_time_ms"] >= 0
    assert api.session_statistics(pool="stats-a")["total"] == 2
    naive = before.replace(tzinfo=None)  # taken as UTC
    assert api.session_statistics(pool="stats-a", since=naive)["total"] == 2
    later = datetime.now(UTC) + timedelta(hours=1)
    assert api.session_statistics(since=later)["total"] == 0
    assert api.session_statistics(since="2000-01-01T00:00:00Z")["total"] == 3
    offset = (later + timedelta(hours=2)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    assert api.session_statistics(since=offset)["total"] == 0  # `+` sent as %2B
    with pytest.raises(ValidationError) as error:
        api.session_statistics(pool="Not A Pool")
    assert "pool" in error.value.details


def test_agent_performance(api):
    agent = api.register_agent("perf-1", "QA", ["TESTING"], pool="stats-b")
    assert agent["tasks_completed"] == 0 and agent["success_rate"] is None
    performance = api.agent_performance(pool="stats-b")
    assert (performance["total_agents"], performance["active_agents"]) == (1, 1)
    assert performance["by_type"]["QA"]["total_agents"] == 1
    assert performance["avg_success_rate"] is None
    assert api.agent_performance()["total_tasks_completed"] == 0
    assert api.agent_performance(pool="nobody")["total_agents"] == 0
    with pytest.raises(ValidationError):
        api.agent_performance(pool="")
