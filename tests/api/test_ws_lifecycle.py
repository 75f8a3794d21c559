"""A WebSocket's whole life on a real gunicorn server: a resume however far behind the
client is (CONTRACT section 9), and a client's normal close, which is not an error."""

from __future__ import annotations

import contextlib
import functools
import json
import time
import uuid

import pytest
import requests
from sqlalchemy import text

from orchestrator_client.ws_client import Client
from tests.support.database import empty_tables
from tests.support.processes import output, serving
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process]


@pytest.fixture(params=["web", "gateway"])
def web_process(request, settings):
    """Starts the Procfile's `web`, or `gateway` (beside a `web`), on a free port, ready;
    yields (base URL, the process serving the sockets)."""
    return functools.partial(serving, request.param, settings)


def ended_streams(process) -> list[dict]:
    """The request log's lines of WebSocket connections that have ended."""
    return [
        line
        for line in log_lines(process)
        if line.get("status") == 101 and line.get("path", "").startswith("/ws/")
    ]


def log_lines(process) -> list[dict]:
    lines = []
    for line in output(process).splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def insert_events(database, count: int, marker: str) -> None:
    """`count` agent events at once, straight into the outbox (the relay publishes them)."""
    with database.transaction() as db:
        db.execute(
            text(
                "INSERT INTO outbox_events (type, payload) SELECT 'agent.heartbeat', "
                "jsonb_build_object('agent_id', :marker, 'n', n) "
                "FROM generate_series(1, :count) AS n"
            ),
            {"marker": marker, "count": count},
        )


def published_up_to(database, at_least: int = 1) -> int:
    """The newest event id once everything is published and it is at least `at_least`."""
    with database.transaction() as db:
        if db.scalar(text("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")):
            return 0
        newest = db.scalar(text("SELECT coalesce(max(seq), 0) FROM outbox_events"))
    return newest if newest >= at_least else 0


def ids(messages: list[dict]) -> list[int]:
    return [int(m["id"]) for m in messages]


def receive_all(client, until, timeout: float = 60) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(messages):
        assert time.monotonic() < deadline, f"{len(messages)} messages in {timeout}s"
        raw = client.receive(timeout=1)
        if raw is not None:
            messages.append(json.loads(raw))
    return messages


RESUMED = 12_000  # more than a resume read at once before (10,000)


def test_a_resume_delivers_every_retained_event_however_far_behind(web_process, database):
    """A client 12,000 events behind gets all 12,000, in order, then the live stream; and
    when some are no longer retained, an events.dropped message says exactly which."""
    empty_tables(database)
    with web_process(EVENT_RETENTION="20000") as (base, _web):
        ws_base = base.replace("http", "ws")
        requests.post(f"{base}/api/v1/sessions", json={"title": "before"}, timeout=10)
        last_seen = wait_for(lambda: published_up_to(database))
        insert_events(database, RESUMED, str(uuid.uuid4()))
        newest = wait_for(lambda: published_up_to(database, last_seen + RESUMED), timeout=60)

        client = Client.connect(f"{ws_base}/ws/agents?last_event_id={last_seen}")
        messages = receive_all(client, lambda ms: len(ms) >= RESUMED)
        assert ids(messages) == list(range(last_seen + 1, newest + 1))
        assert [m["payload"]["n"] for m in messages] == list(range(1, RESUMED + 1))
        live = requests.post(
            f"{base}/api/v1/agents/register",
            json={"name": f"live-{uuid.uuid4()}", "type": "QA", "capabilities": ["TESTING"]},
            timeout=10,
        ).json()
        messages += receive_all(
            client, lambda ms: any(m["payload"].get("agent_id") == live["id"] for m in ms)
        )
        assert ids(messages) == list(range(last_seen + 1, ids(messages)[-1] + 1)), "then live"
        client.close()

        # the oldest 500 of them pruned: the resume says so, exactly, then sends the rest
        with database.transaction() as db:
            db.execute(text("DELETE FROM outbox_events WHERE seq <= :n"), {"n": last_seen + 500})
        client = Client.connect(f"{ws_base}/ws/agents?last_event_id={last_seen}")
        messages = receive_all(client, lambda ms: len(ms) >= 1 + RESUMED - 500)
        dropped = messages[0]
        assert dropped["type"] == "events.dropped"
        assert dropped["payload"]["last_event_id"] == str(last_seen)
        assert dropped["payload"]["oldest_available_id"] == str(last_seen + 501)
        assert ids(messages[1:]) == list(range(last_seen + 501, newest + 1))
        client.close()


def test_a_client_closing_its_socket_logs_no_error(web_process, database):
    """Clients close in every way a client does: a close frame at once or after a while, or
    the TCP connection dropped; none of it is an error of the server's."""
    empty_tables(database)
    failures = []
    with web_process(
        LOG_LEVEL="INFO", WEB_CONCURRENCY="1", WS_MAX_CONNECTIONS_PER_CLIENT="100"
    ) as (base, web):
        ws_base = base.replace("http", "ws")
        session = requests.post(f"{base}/api/v1/sessions", json={"title": "s"}, timeout=10).json()
        paths = ("/ws/sessions", "/ws/system", "/ws/agents", f"/ws/sessions/{session['id']}")
        closed = 0
        for path in paths:
            for way in ("close at once", "close later", "drop later", "drop at once") * 2:
                client = Client.connect(ws_base + path)
                if way.endswith("later"):
                    time.sleep(0.3)  # a client that stays a while before it goes
                if way.startswith("close"):
                    client.close()
                    closed += 1
                    # the server has seen it end: the connection is logged (101). A dropped
                    # one is seen only when the server next reads or pings it.
                    wait_for(lambda: len(ended_streams(web)) >= closed, timeout=10)  # noqa: B023
                else:
                    client.sock.close()
                errors = [line for line in log_lines(web) if line["level"] in ("ERROR", "CRITICAL")]
                if len(errors) > len(failures):
                    failures += [(path, way, line["message"]) for line in errors[len(failures) :]]
        time.sleep(2)  # lets the dropped sockets' threads notice (nothing to observe before)
        lines = log_lines(web)
    assert any("/ws/" in json.dumps(line) for line in lines), "the closes were logged"
    errors = [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert not errors, failures or errors
