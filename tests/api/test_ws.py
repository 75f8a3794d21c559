"""The five WebSocket streams over a real gunicorn server, fed by the outbox relay, with a
real Celery worker doing the assignments (CONTRACT section 9)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests
from simple_websocket import ConnectionClosed
from sqlalchemy import text

from tests.support.live_server import live_server_fixture
from tests.support.processes import (
    PrivateRedis,
    free_port,
    kill_group,
    running_web,
    serving,
    start,
    stop,
    wait_for_http,
)
from tests.support.streams import Stream, close_code
from tests.support.waiting import wait_for

# A live server runs through the module: its tables are not emptied between tests (event
# ids only grow; truncating the outbox under a running relay would reset them).
pytestmark = [pytest.mark.shared_data, pytest.mark.process]


def assert_contract_format(message: dict) -> None:
    assert set(message) == {"id", "type", "payload", "timestamp"}
    assert isinstance(message["id"], str) and message["timestamp"].endswith("Z")
    assert isinstance(message["payload"], dict)


PING_INTERVAL_SECONDS = 3


live = live_server_fixture(
    gateway=True,
    SYSTEM_EVENT_INTERVAL_SECONDS="1",
    WEB_THREADS="32",
    WS_SEND_TIMEOUT_SECONDS="2",
    # pings often enough to test, not so often that a client busy with a burst of
    # thousands of events on a loaded machine misses its pong deadline
    WS_PING_INTERVAL_SECONDS=str(PING_INTERVAL_SECONDS),
    WS_MAX_CONNECTIONS_PER_CLIENT="100",
)


def post(base, path, body=None):
    response = requests.post(f"{base}{path}", json=body or {}, timeout=10)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def test_each_stream_gets_its_events(live):
    sessions = Stream(live, "/ws/sessions")
    agents = Stream(live, "/ws/agents")
    session = post(live, "/api/v1/sessions", {"title": "streamed"})
    one_session = Stream(live, f"/ws/sessions/{session['id']}")
    agent = post(
        live,
        "/api/v1/agents/register",
        {
            "name": f"ws-{uuid.uuid4()}",
            "type": "BACKEND",
            "capabilities": ["CODE_GENERATION", "SYSTEM_DESIGN", "TESTING", "CODE_REVIEW"],
        },
    )
    one_agent = Stream(live, f"/ws/agents/{agent['id']}")
    post(live, f"/api/v1/sessions/{session['id']}/start")
    task = post(live, "/api/v1/tasks", {"session_id": session["id"], "title": "t"})

    # the worker assigns it: the agent hears without polling
    assigned = one_agent.wait_types("task.assigned")
    event = next(m for m in assigned if m["type"] == "task.assigned")
    assert event["payload"]["task_id"] == task["id"]
    assert event["payload"]["agent_id"] == agent["id"]
    post(live, f"/api/v1/agents/{agent['id']}/heartbeat", {"current_load": 20})
    post(live, f"/api/v1/tasks/{task['id']}/start")
    post(live, f"/api/v1/tasks/{task['id']}/complete", {"result": {}})
    parent = post(
        live,
        "/api/v1/tasks",
        {"session_id": session["id"], "title": "big", "required_capabilities": ["DEPLOYMENT"]},
    )
    requests.post(
        f"{live}/api/v1/tasks/{parent['id']}/decompose", json={"template": "BUGFIX"}, timeout=10
    )

    session_types = (
        "session.created",
        "session.status_changed",
        "task.created",
        "task.status_changed",
        "task.assigned",
        "task.decomposed",
    )
    sessions.wait_types(*session_types)
    one_session.wait_types(*session_types[1:])
    agents.wait_types("agent.registered", "agent.heartbeat", "agent.status_changed")
    one_agent.wait_types("agent.heartbeat", "agent.status_changed", "task.status_changed")
    requests.delete(f"{live}/api/v1/agents/{agent['id']}", timeout=10)
    agents.wait_types("agent.deregistered")

    for stream in (sessions, one_session, agents, one_agent):
        for message in stream.messages:
            assert_contract_format(message)
            assert message["payload"]["pool"] == "default", message  # every payload
        assert stream.ids() == sorted(set(stream.ids())), "in order, once"
    assert all(m["type"].startswith(("session.", "task.")) for m in sessions.messages)
    assert all(m["payload"]["session_id"] == session["id"] for m in one_session.messages)
    assert all(m["type"].startswith("agent.") for m in agents.messages)
    assert all(m["payload"]["agent_id"] == agent["id"] for m in one_agent.messages)
    status = next(m for m in sessions.messages if m["type"] == "session.status_changed")
    assert status["payload"]["status"] == "RUNNING"
    assert status["payload"]["previous_status"] == "PENDING"
    decomposed = next(m for m in sessions.messages if m["type"] == "task.decomposed")
    assert len(decomposed["payload"]["subtask_ids"]) == 4
    for stream in (sessions, one_session, agents, one_agent):
        stream.close()


def test_the_streams_filter_by_pool(live):
    red_sessions = Stream(live, "/ws/sessions?pool=red")
    red_agents = Stream(live, "/ws/agents?pool=red")
    everything = Stream(live, "/ws/sessions")
    blue = post(live, "/api/v1/sessions", {"title": "blue work", "pool": "blue"})
    red = post(live, "/api/v1/sessions", {"title": "red work", "pool": "red"})
    post(live, "/api/v1/tasks", {"session_id": blue["id"], "title": "blue task"})
    red_task = post(live, "/api/v1/tasks", {"session_id": red["id"], "title": "red task"})
    body = {"type": "QA", "capabilities": ["TESTING"]}
    post(live, "/api/v1/agents/register", {**body, "name": f"blue-{uuid.uuid4()}", "pool": "blue"})
    red_agent = post(
        live, "/api/v1/agents/register", {**body, "name": f"red-{uuid.uuid4()}", "pool": "red"}
    )
    red_sessions.receive_until(
        lambda ms: any(m["payload"].get("task_id") == red_task["id"] for m in ms)
    )
    red_agents.wait_types("agent.registered")
    everything.receive_until(
        lambda ms: any(m["payload"].get("task_id") == red_task["id"] for m in ms)
    )
    assert {m["payload"]["pool"] for m in red_sessions.messages} == {"red"}
    assert {m["payload"]["session_id"] for m in red_sessions.messages} == {red["id"]}
    assert [m["payload"]["agent_id"] for m in red_agents.messages] == [red_agent["id"]]
    assert {"red", "blue"} <= {m["payload"]["pool"] for m in everything.messages}
    for stream in (red_sessions, red_agents, everything):
        stream.close()
    closed = close_code(live.replace("http", "ws") + "/ws/sessions?pool=Not%20A%20Pool")
    assert closed.reason == 4400


def test_an_agent_hears_at_once_that_a_task_was_taken_back(live):
    session = post(live, "/api/v1/sessions", {"title": "taken back"})
    body = {"name": f"ws-{uuid.uuid4()}", "type": "QA", "capabilities": ["SECURITY_AUDIT"]}
    agent = post(live, "/api/v1/agents/register", body)
    mine = Stream(live, f"/ws/agents/{agent['id']}")
    its_session = Stream(live, f"/ws/sessions/{session['id']}")
    post(live, f"/api/v1/sessions/{session['id']}/start")
    task = post(
        live,
        "/api/v1/tasks",
        {"session_id": session["id"], "title": "t", "required_capabilities": ["SECURITY_AUDIT"]},
    )
    mine.wait_types("task.assigned")
    # an operator deregisters it: its task goes back to PENDING, and its stream says so
    requests.delete(f"{live}/api/v1/agents/{agent['id']}", timeout=10)
    taken = mine.receive_until(
        lambda ms: any(
            m["type"] == "task.status_changed" and m["payload"]["status"] == "PENDING" for m in ms
        )
    )
    back = next(
        m
        for m in taken
        if m["type"] == "task.status_changed" and m["payload"]["status"] == "PENDING"
    )
    assert back["payload"]["task_id"] == task["id"]
    assert back["payload"]["previous_agent_id"] == agent["id"]
    assert back["payload"]["agent_id"] is None
    mine.close()
    post(live, f"/api/v1/sessions/{session['id']}/cancel")
    # nothing of this test is still on its way when the next one starts
    its_session.receive_until(
        lambda ms: (
            any(m["payload"].get("status") == "CANCELLED" and "task_id" in m["payload"] for m in ms)
            and any(
                m["type"] == "session.status_changed" and m["payload"]["status"] == "CANCELLED"
                for m in ms
            )
        )
    )
    its_session.close()


def test_resume_delivers_exactly_what_was_missed(live):
    watcher = Stream(live, "/ws/sessions")
    leaver = Stream(live, "/ws/sessions")
    first = post(live, "/api/v1/sessions", {"title": "before"})
    leaver.receive_until(lambda ms: any(m["payload"]["session_id"] == first["id"] for m in ms))
    last_id = leaver.messages[-1]["id"]
    leaver.close()
    missed = [post(live, "/api/v1/sessions", {"title": f"missed {i}"}) for i in range(3)]
    for created in missed:
        post(live, f"/api/v1/sessions/{created['id']}/start")
    started = {created["id"] for created in missed}

    def all_started(ms):
        seen = {m["payload"]["session_id"] for m in ms if m["type"] == "session.status_changed"}
        return started <= seen

    watcher.receive_until(all_started)
    back = Stream(live, f"/ws/sessions?last_event_id={last_id}")
    back.receive_until(all_started)
    again = post(live, "/api/v1/sessions", {"title": "live again"})

    def live_again_seen(ms):
        return any(
            m["type"] == "session.created" and m["payload"]["session_id"] == again["id"] for m in ms
        )

    back.receive_until(live_again_seen)
    watcher.receive_until(live_again_seen)
    # Other tests' late events may interleave: both streams must still agree exactly.
    expected = [m for m in watcher.messages if int(m["id"]) > int(last_id)]
    assert back.messages == expected[: len(back.messages)]
    assert back.messages[-1]["payload"]["session_id"] == again["id"]
    assert back.ids() == sorted(set(back.ids()))
    watcher.close()
    back.close()


def test_resume_from_before_retention_says_events_were_dropped(live, database):
    with database.transaction() as db:
        oldest = db.scalar(text("SELECT min(seq) FROM outbox_events"))
    post(live, "/api/v1/sessions", {"title": "x"})
    if not oldest or oldest <= 1:
        with database.transaction() as db:  # forget the first events, as retention would
            db.execute(text("DELETE FROM outbox_events WHERE seq <= 1"))
    stream = Stream(live, "/ws/sessions?last_event_id=0")
    stream.receive_until(lambda ms: len(ms) >= 2)
    assert stream.messages[0]["type"] == "events.dropped"
    stream.close()


def test_unknown_session_or_agent_closes_with_a_reason(live):
    for path in (f"/ws/sessions/{uuid.uuid4()}", f"/ws/agents/{uuid.uuid4()}", "/ws/sessions/x"):
        closed = close_code(live.replace("http", "ws") + path)
        assert closed.reason in (4404, 4400)
        assert "not found" in closed.message


def raw_stream(base: str, path: str) -> socket.socket:
    """A socket that asked for the upgrade to `path`; the answer is for the caller to read."""
    peer = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    peer.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return peer


def test_a_peer_that_never_answers_pings_is_closed(live):
    """A dead or frozen client is noticed: no pong to a ping, then closed with 1008."""
    with raw_stream(live, "/ws/agents") as peer:
        peer.settimeout(4 * PING_INTERVAL_SECONDS)
        received = b""
        began = time.monotonic()
        while chunk := peer.recv(65536):  # read, but never answer
            received += chunk
        pings = received.count(b"\x89\x00")
        close = received[received.rindex(b"\x88") :]
    assert pings >= 1
    assert int.from_bytes(close[2:4], "big") == 1008 and b"Ping/Pong timeout" in close
    assert time.monotonic() - began < 3 * PING_INTERVAL_SECONDS + 2


def test_a_peer_that_answers_pings_stays_connected(live):
    """Pings come every interval and a peer that answers each (a masked pong) is never
    closed for them: past its second ping (which found the first answered) it still gets
    the next event."""
    with raw_stream(live, "/ws/sessions") as peer:
        peer.settimeout(0.5)
        received, pings = b"", 0
        deadline = time.monotonic() + 2 * PING_INTERVAL_SECONDS + 0.5
        while time.monotonic() < deadline:
            try:
                chunk = peer.recv(65536)
            except TimeoutError:
                continue
            assert chunk, "closed while answering pings"
            received += chunk
            while b"\x89\x00" in received:  # a ping without payload: answer it
                received = received.replace(b"\x89\x00", b"", 1)
                pings += 1
                peer.sendall(b"\x8a\x80" + b"\x00\x00\x00\x00")
        post(live, "/api/v1/sessions", {"title": "after the pings"})
        peer.settimeout(10)
        while b"session.created" not in received:
            chunk = peer.recv(65536)
            assert chunk, "closed while answering pings"
            received += chunk
    assert pings >= 2


def test_client_messages_are_answered_not_fatal(live):
    stream = Stream(live, "/ws/sessions")
    stream.client.send("ping")
    stream.client.send("what is this?")
    stream.client.send(b"\x00\x01")
    stream.wait_types("pong", "error")
    post(live, "/api/v1/sessions", {"title": "still alive"})
    stream.wait_types("session.created")
    stream.close()


def test_bad_last_event_id_gets_an_error_frame_then_live(live):
    stream = Stream(live, "/ws/sessions?last_event_id=banana")
    stream.wait_types("error")
    post(live, "/api/v1/sessions", {"title": "live"})
    stream.wait_types("session.created")
    stream.close()


def test_system_stream_ticks(live):
    stream = Stream(live, "/ws/system")
    stream.receive_until(lambda ms: len(ms) >= 3, timeout=10)
    for message in stream.messages:
        assert message["type"] == "system.health"
        assert_contract_format(message)
        payload = message["payload"]
        assert payload["database"] == "ok" and payload["redis"] == "ok"
        assert payload["workers"] >= 1 and payload["status"] == "ok"
        assert "sessions" in payload["counts"]
    stream.close()


def test_a_slow_client_is_cut_off_without_slowing_others(live, database):
    port = int(live.rsplit(":", 1)[1])
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.sendall(
        b"GET /ws/agents HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    time.sleep(0.5)  # the server subscribes it (a reader this slow cannot say when)
    fast = Stream(live, "/ws/agents")
    marker = str(uuid.uuid4())
    count = 8000
    with database.transaction() as db:  # a burst of events at once
        db.execute(
            text(
                "INSERT INTO outbox_events (type, payload) SELECT 'agent.heartbeat', "
                "jsonb_build_object('agent_id', :marker, 'n', n, 'pad', repeat('x', 200)) "
                "FROM generate_series(1, :count) AS n"
            ),
            {"marker": marker, "count": count},
        )
    fast.receive_until(
        lambda ms: sum(m["payload"].get("agent_id") == marker for m in ms) == count, timeout=30
    )
    assert [
        m["payload"]["n"] for m in fast.messages if m["payload"].get("agent_id") == marker
    ] == list(range(1, count + 1))
    # the server cut the slow reader off: a close code (no pong: 1008; buffer full: 1013),
    # or, when its sends block, the socket is dropped before the events end
    time.sleep(3)  # the slow reader stays slow past a ping interval before it reads
    slow.settimeout(30)
    received = b""
    while chunk := slow.recv(65536):  # ends: the server closed the connection
        received += chunk
    close_frame = received.rfind(b"\x88")
    code = int.from_bytes(received[close_frame + 2 : close_frame + 4], "big")
    assert code in (1008, 1013) or len(received) < count * 200, (code, len(received))
    slow.close()
    fast.close()


def test_events_survive_a_redis_outage(settings, celery_worker):
    """Publish fails while Redis is down; the events still arrive, and after Redis is back
    the stream carries on, with nothing missed or repeated."""
    server = PrivateRedis()
    server.start()
    try:
        with running_web(settings.with_overrides(redis_url=server.url)) as base:
            _events_across_an_outage(base, server)
    finally:
        server.kill()


def _events_across_an_outage(base, server):
    stream = Stream(base, "/ws/sessions")
    post(base, "/api/v1/sessions", {"title": "before"})
    stream.wait_types("session.created")
    server.kill()
    during = post(base, "/api/v1/sessions", {"title": "during"})
    stream.receive_until(lambda ms: any(m["payload"]["session_id"] == during["id"] for m in ms))
    server.start()
    wait_for(lambda: requests.get(f"{base}/ready", timeout=5).status_code == 200)
    after = post(base, "/api/v1/sessions", {"title": "after"})
    stream.receive_until(lambda ms: any(m["payload"]["session_id"] == after["id"] for m in ms))
    assert stream.ids() == sorted(set(stream.ids()))
    assert stream.ids() == list(range(stream.ids()[0], stream.ids()[-1] + 1))
    stream.close()


@pytest.mark.parametrize("process", ["web", "gateway"])
def test_sigterm_closes_sockets_with_going_away(settings, process):
    """Graceful shutdown: WebSocket clients get a 1001 close at once and can reconnect
    elsewhere with their last id, instead of holding the server to its graceful timeout.
    Idle sockets sleep until woken: every one of them is."""
    import os
    import signal

    with serving(process, settings, WS_MAX_CONNECTIONS_PER_CLIENT="100") as (base, server):
        streams = [Stream(base, path) for path in ("/ws/sessions", "/ws/agents") * 10]
        os.killpg(server.pid, signal.SIGTERM)
        started = time.monotonic()
        for stream in streams:
            with pytest.raises(ConnectionClosed) as closed:
                while time.monotonic() - started < 10:
                    stream.client.receive(timeout=0.5)
            assert closed.value.reason == 1001
        assert time.monotonic() - started < 5
        server.wait(timeout=20)


def test_a_killed_web_process_loses_its_clients_nothing(live, settings):
    """SIGKILL a web process under its clients: they reconnect to another process with
    their last id and get exactly what happened meanwhile, in order, once."""
    port = free_port()
    doomed = start("web", settings, PORT=str(port), WEB_THREADS="8")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ready", doomed)
        doomed_base = f"http://127.0.0.1:{port}"
        watcher = Stream(live, "/ws/sessions")  # on the other process throughout
        client = Stream(doomed_base, "/ws/sessions")
        first = post(live, "/api/v1/sessions", {"title": "seen before the kill"})
        client.receive_until(lambda ms: any(m["payload"]["session_id"] == first["id"] for m in ms))
        last_id = client.messages[-1]["id"]
        kill_group(doomed)
        with pytest.raises(ConnectionClosed):
            while True:
                client.client.receive(timeout=5)
        missed = [post(live, "/api/v1/sessions", {"title": f"while down {n}"}) for n in range(3)]
        watcher.receive_until(
            lambda ms: any(m["payload"]["session_id"] == missed[-1]["id"] for m in ms)
        )
        expected = [m for m in watcher.messages if int(m["id"]) > int(last_id)]

        again = Stream(live, f"/ws/sessions?last_event_id={last_id}")
        again.receive_until(lambda ms: len(ms) >= len(expected))
        after = post(live, "/api/v1/sessions", {"title": "after the reconnect"})
        again.receive_until(lambda ms: any(m["payload"]["session_id"] == after["id"] for m in ms))
        assert again.messages[: len(expected)] == expected
        assert again.ids() == sorted(set(again.ids()))  # in order, once
        watcher.close()
        again.close()
    finally:
        stop(doomed)
