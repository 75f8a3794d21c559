"""The Procfile's `gateway` (gunicorn's gevent worker, orchestrator_api/gateway.py): what
it adds to the streams' promises, which tests/api/test_ws*.py check on it as on `web`.
Its own cap on sockets, the per-client cap shared with `web`, PostgreSQL waits that hold up
no other socket, and idle sockets that cost nothing while idle."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from orchestrator_client.ws_client import Client
from tests.support.database import empty_tables
from tests.support.processes import free_port, running_web, serving, start, stop, wait_for_http
from tests.support.streams import close_code
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@contextlib.contextmanager
def web_and_gateway(settings, **env):
    """A `web` (relaying the events) and a `gateway`; yields their base URLs and the
    gateway's process."""
    with running_web(settings, **env) as web:
        port = free_port()
        gateway = start("gateway", settings, GATEWAY_PORT=str(port), **env)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/ready", gateway)
            yield web, f"http://127.0.0.1:{port}", gateway
        finally:
            stop(gateway)


def upgrade(
    base: str, path: str = "/ws/sessions", source: str | None = None
) -> tuple[int, dict, socket.socket]:
    """A raw WebSocket upgrade (from `source`, an address on this host): the status, the
    error body when refused, and the socket."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0) if source else None
    )
    sock.sendall(UPGRADE.format(path=path).encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    if status == 101:
        return status, {}, sock
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    while len(body) < length:
        body += sock.recv(65536)
    sock.close()
    return status, json.loads(body), sock


def open_sockets(into: list, base: str, path: str, count: int, source: str) -> None:
    """`count` upgraded sockets on `path`, from `source`, appended to `into` as they open
    (the caller closes them)."""
    for _ in range(count):
        status, _, sock = upgrade(base, path, source=source)
        assert status == 101
        into.append(sock)


def worker_pid(gateway) -> int:
    """The gateway's one gunicorn worker (GATEWAY_CONCURRENCY=1)."""
    with open(f"/proc/{gateway.pid}/task/{gateway.pid}/children") as handle:
        (pid,) = map(int, handle.read().split())
    return pid


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def test_the_gateway_has_its_own_cap_and_shares_the_per_client_cap(settings, database):
    """GATEWAY_MAX_CONNECTIONS, not WS_MAX_CONNECTIONS_PER_PROCESS, bounds the gateway
    (503 beyond); a client's sockets on `web` and the gateway count together (429)."""
    empty_tables(database)
    # A client is its address in development: one of its own, since leases of 127.0.0.1
    # held by a process another test killed count for up to a minute.
    me = "127.0.0.77"
    env = {"WS_MAX_CONNECTIONS_PER_PROCESS": "1", "WS_MAX_CONNECTIONS_PER_CLIENT": "3"}
    with web_and_gateway(settings, GATEWAY_MAX_CONNECTIONS="3", **env) as (web, gateway, _):
        on_web = upgrade(web, source=me)  # web's own cap: 1
        assert on_web[0] == 101
        on_gateway = [upgrade(gateway, source=me) for _ in range(2)]  # more than web's cap
        assert [status for status, _, _ in on_gateway] == [101, 101]
        status, body, _ = upgrade(gateway, source=me)  # it holds 3: its cap, wherever they are
        assert (status, body["error"]["code"]) == (429, "RATE_LIMITED")
        on_web[2].close()  # web sees it go and gives its lease back

        def third_accepted():
            status, _, sock = upgrade(gateway, source=me)
            if status == 101:
                on_gateway.append((status, {}, sock))
            return status == 101

        wait_for(third_accepted, timeout=10, interval=0.2)
        status, body, _ = upgrade(gateway, source=me)  # the gateway holds its 3
        assert (status, body["error"]["code"]) == (503, "SERVICE_UNAVAILABLE")
        assert "3 WebSocket connections" in body["error"]["message"]
        for _, _, sock in on_gateway:
            sock.close()


def test_a_request_waiting_for_postgresql_holds_up_no_socket(settings, database):
    """psycopg2 waits through gevent: while a request through the gateway waits for a
    table lock, a stream on the same process still answers at once."""
    empty_tables(database)
    with web_and_gateway(settings) as (_web, gateway, _process):
        client = Client.connect(gateway.replace("http", "ws") + "/ws/sessions")
        engine = create_engine(settings.sqlalchemy_url)
        answered: list[int] = []
        try:
            with engine.connect() as holder:
                holder.execute(text("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE"))
                waiting = threading.Thread(
                    target=lambda: answered.append(
                        requests.get(f"{gateway}/api/v1/agents", timeout=30).status_code
                    )
                )
                waiting.start()
                time.sleep(1)  # the request is in, waiting for the lock
                began = time.monotonic()
                client.send("ping")
                assert json.loads(client.receive(timeout=5))["type"] == "pong"
                assert time.monotonic() - began < 2
                assert not answered, "the request waits for the lock"
                holder.rollback()
            waiting.join(timeout=30)
            assert answered == [200]
        finally:
            client.close()
            engine.dispose()


IDLE_SOCKETS = 1000
# The idle sockets come from an address of their own: their leases (which outlive the
# test for a while) count against that address, not against 127.0.0.1's cap in later tests.
IDLE_SOURCE = "127.0.0.9"
IDLE_SECONDS = 3


def test_idle_sockets_cost_next_to_nothing(settings, database):
    """A thousand open, idle sockets add almost no CPU: a socket sleeps until its client
    or the hub has something for it (before, each woke twice a second: 0.3 s or more of
    CPU in 5 s)."""
    empty_tables(database)
    with web_and_gateway(settings, WS_MAX_CONNECTIONS_PER_CLIENT="2000") as (_, gateway, process):
        pid = worker_pid(process)
        time.sleep(1)
        before = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        baseline = cpu_seconds(pid) - before
        sockets = []
        try:
            open_sockets(sockets, gateway, "/ws/agents", IDLE_SOCKETS, IDLE_SOURCE)
            time.sleep(2)  # the last ones set up
            before = cpu_seconds(pid)
            time.sleep(IDLE_SECONDS)
            idle = cpu_seconds(pid) - before
        finally:
            for sock in sockets:
                sock.close()
    assert idle - baseline < 0.03 * IDLE_SECONDS, (idle, baseline)  # 3% of a core


@pytest.mark.parametrize("process", ["web", "gateway"])
def test_a_failure_after_the_upgrade_closes_with_1011_not_an_http_answer(
    settings, database, process
):
    """The database failing under a stream (here: its resume reading a table that is
    gone) closes the socket with 1011, a close the client reads and reconnects after;
    before, Flask answered 500 in HTTP into the upgraded socket."""
    empty_tables(database)
    # earlier tests' sockets may hold leases of this address for a while: a generous cap
    with serving(process, settings, WS_MAX_CONNECTIONS_PER_CLIENT="5000") as (base, _server):
        requests.post(f"{base}/api/v1/sessions", json={"title": "an event"}, timeout=10)
        engine = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("ALTER TABLE outbox_events RENAME TO outbox_gone"))
                try:
                    closed = close_code(base.replace("http", "ws") + "/ws/sessions?last_event_id=0")
                finally:
                    connection.execute(text("ALTER TABLE outbox_gone RENAME TO outbox_events"))
        finally:
            engine.dispose()
    assert closed.reason == 1011
    assert "reconnect" in closed.message


FAN_OUT_SOCKETS = 2200  # more than the hub's LATE_EVENTS_EVERY: fan-outs read as they go
FAN_OUT_SOURCE = "127.0.0.10"
FAN_OUT_EVENTS = 30


def test_every_socket_gets_every_event_once_in_order_while_fan_outs_overlap_events(
    settings, database
):
    """2,200 sockets on /ws/sessions while sessions are created as fast as one client
    can: events keep coming during each fan-out, which gives them to the sockets it has
    yet to write, and the next one to the rest. Every socket gets every event once, in
    order (orchestrator_api/ws_hub.py, LATE_EVENTS_EVERY)."""
    empty_tables(database)
    env = {"WS_MAX_CONNECTIONS_PER_CLIENT": str(FAN_OUT_SOCKETS + 10)}
    with web_and_gateway(settings, **env) as (web, gateway, _):
        sockets: list[socket.socket] = []
        try:
            open_sockets(sockets, gateway, "/ws/sessions", FAN_OUT_SOCKETS, FAN_OUT_SOURCE)
            for sock in sockets:
                sock.setblocking(False)
            time.sleep(1)  # the last ones subscribed
            with requests.Session() as http:
                for number in range(FAN_OUT_EVENTS):
                    answer = http.post(
                        f"{web}/api/v1/sessions", json={"title": f"s{number}"}, timeout=10
                    )
                    assert answer.status_code == 201
            received = read_event_ids(sockets, FAN_OUT_EVENTS, timeout=60)
        finally:
            for sock in sockets:
                sock.close()
    first = received[0]
    assert len(first) == FAN_OUT_EVENTS and first == sorted(first)
    assert all(ids == first for ids in received), "some socket missed, repeated or reordered"


def read_event_ids(sockets: list[socket.socket], count: int, timeout: float) -> list[list[int]]:
    """The ids of the text frames each socket receives, until each has `count` of them."""
    import selectors

    selector = selectors.DefaultSelector()
    buffers = {sock: b"" for sock in sockets}
    ids: dict[socket.socket, list[int]] = {sock: [] for sock in sockets}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    waiting = set(sockets)
    while waiting and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            chunk = sock.recv(1 << 20)
            assert chunk, "a socket was closed"
            buffers[sock] += chunk
            buffers[sock] = take_frames(buffers[sock], ids[sock])
            if len(ids[sock]) >= count:
                waiting.discard(sock)
    selector.close()
    assert not waiting, f"{len(waiting)} sockets still short of {count} events"
    return [ids[sock] for sock in sockets]


def take_frames(data: bytes, ids: list[int]) -> bytes:
    """Parse whole server frames (unmasked) off `data`: text frames' event ids go to `ids`;
    returns what is left of an unfinished frame."""
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            break
        if data[0] & 0x0F == 0x1:  # text: an event
            ids.append(int(json.loads(data[start : start + length])["id"]))
        data = data[start + length :]
    return data
