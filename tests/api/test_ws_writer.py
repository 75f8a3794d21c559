"""The gateway's per-socket writer and subscription, on a real socket pair."""

import socket
import threading
import time

import pytest

from orchestrator_api import ws_sockets as ws


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield server, client
    server.close()
    client.close()


def read_all(sock: socket.socket, size: int, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        data += sock.recv(65536)
    return data


def test_a_client_that_does_not_read_never_blocks_the_writer(pair, monkeypatch):
    monkeypatch.setattr(ws, "BUFFER_BYTES", 200_000)
    server, client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    chunk = b"x" * 10_000
    began = time.monotonic()
    for _ in range(19):
        assert writer.send(chunk, event=True) == len(chunk)
    assert time.monotonic() - began < 1  # nothing waited on the client
    assert writer.pending and not writer.overflowed
    assert writer.send(chunk * 5, event=True) == 0  # over the bound: dropped, flagged
    assert writer.overflowed
    writer.send(b"text")  # a message of the server's own still goes out, after what waits
    received = b""
    client.settimeout(5)
    while not received.endswith(b"text"):
        received += client.recv(65536)
        writer.flush()
    assert received == chunk * 19 + b"text"


def test_stalled_once_the_client_takes_nothing_for_the_send_timeout(pair):
    server, _client = pair
    writer = ws.SocketWriter(server, send_timeout=0.2)
    writer.send(b"y" * 500_000)
    assert not writer.stalled()
    time.sleep(0.3)  # past the send timeout, bytes waiting all along
    writer.flush()
    assert writer.stalled()


def test_writes_from_several_threads_never_interleave(pair):
    server, client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    frames = {n: bytes([65 + n]) * 3000 for n in range(8)}

    def write(n: int) -> None:
        for _ in range(20):
            writer.send(frames[n], event=True)

    threads = [threading.Thread(target=write, args=(n,)) for n in frames]
    for thread in threads:
        thread.start()
    received = b""
    client.settimeout(5)
    while len(received) < 8 * 20 * 3000:
        writer.flush()
        received += client.recv(65536)
    for thread in threads:
        thread.join()
    chunks = [received[i : i + 3000] for i in range(0, len(received), 3000)]
    assert all(chunk == chunk[:1] * 3000 for chunk in chunks)


def test_recv_waits_for_data_on_the_non_blocking_socket(pair):
    server, client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    threading.Timer(0.1, client.sendall, args=(b"hello",)).start()
    assert writer.recv(100) == b"hello"


def test_a_subscription_holds_events_until_the_resume_is_sent_then_skips_what_it_covered(pair):
    server, client = pair
    subscription = ws.Subscription(lambda message: True)
    subscription.deliver([(5, b"[5]"), (6, b"[6]")])
    subscription.deliver([(7, b"[7]")])
    writer = ws.SocketWriter(server, send_timeout=10)
    writer.send(b"[resume 1-6]")  # what the resume sent, through the same writer
    subscription.go_live(writer, floor=6)
    subscription.deliver([(6, b"[6]"), (8, b"[8]"), (0, b"[health]")])
    expected = b"[resume 1-6][7][8][health]"
    assert read_all(client, len(expected)) == expected


def test_held_events_beyond_the_bound_mark_the_subscription_overflowed(monkeypatch):
    monkeypatch.setattr(ws, "BUFFER_BYTES", 100)
    subscription = ws.Subscription(lambda message: True)
    subscription.deliver([(1, b"z" * 60)])
    assert not subscription.overflowed
    subscription.deliver([(2, b"z" * 60)])
    assert subscription.overflowed


def test_an_idle_connection_is_not_stalled(pair):
    """Only time with bytes waiting counts: a quiet connection that then sends is fine,
    even seen mid-send from another thread."""
    server, _client = pair
    writer = ws.SocketWriter(server, send_timeout=0.1)
    time.sleep(0.2)  # idle past the send timeout, with nothing waiting
    with writer.lock:  # a send in progress: its bytes are appended, not yet written
        writer.pending.append(b"frame")
        writer.pending_bytes += 5
        seen = threading.Thread(target=lambda: results.append(writer.stalled()))
        results: list[bool] = []
        seen.start()
        time.sleep(0.05)  # the other thread asks while the send holds the lock
    seen.join()
    writer.flush()
    assert results == [False] and not writer.stalled()


PING = bytes([0x89, 0])
CLOSE = bytes([0x88, 2]) + (1013).to_bytes(2, "big")


def frame(n: int, size: int = 5000) -> bytes:
    payload = str(n).encode().ljust(size, b".")
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


def drain_client(writer, client, until: bytes) -> bytes:
    received = b""
    client.settimeout(5)
    while not received.endswith(until):
        writer.flush()
        received += client.recv(65536)
    return received


def test_a_ping_goes_ahead_of_a_backlog_but_never_cuts_a_frame(pair):
    server, client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    frames = [frame(n) for n in range(40)]
    for data in frames:
        writer.send(data, event=True)
    assert writer.pending and writer.offset > 0  # the first waiting frame is half out
    writer.send(PING)
    received = drain_client(writer, client, frames[-1])
    before_ping = received[: received.index(PING)]
    whole = len(before_ping) // len(frames[0])
    assert before_ping == b"".join(frames[:whole])  # whole frames only, then the ping
    assert 1 <= whole < len(frames)  # the half-sent frame ended, the rest waited
    assert received == before_ping + PING + b"".join(frames[whole:])


def test_a_close_drops_what_waits_and_ends_the_writes(pair):
    server, client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    frames = [frame(n) for n in range(40)]
    for data in frames:
        writer.send(data, event=True)
    writer.send(CLOSE)
    writer.send(frame(99), event=True)  # after the close: never sent
    received = drain_client(writer, client, CLOSE)
    assert received.endswith(CLOSE) and received.count(CLOSE) == 1
    body = received[: -len(CLOSE)]
    whole = len(body) // len(frames[0])
    assert body == b"".join(frames[:whole])  # only whole frames, in order
    assert whole < len(frames)  # the rest was dropped
    writer.flush()
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(65536)  # nothing followed the close


def test_recv_gives_up_when_the_socket_is_closed_under_it(pair):
    server, _client = pair
    writer = ws.SocketWriter(server, send_timeout=10)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            writer.recv(100)
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)  # the reader is blocked in recv when the socket closes
    writer.close()
    reader.join(5)
    assert not reader.is_alive() and outcome


def test_the_socket_is_woken_when_bytes_start_waiting_and_on_overflow(pair, monkeypatch):
    """The socket's own thread sleeps until woken: once when a write is left waiting for
    the client (then it retries), again when events overflow; not for writes that went."""
    monkeypatch.setattr(ws, "BUFFER_BYTES", 100_000)
    server, client = pair
    wakes = []
    writer = ws.SocketWriter(
        server, send_timeout=10, wake=lambda: wakes.append(len(writer.pending))
    )
    writer.send(b"a" * 100, event=True)  # goes at once
    assert read_all(client, 100) == b"a" * 100 and wakes == []
    chunk = b"y" * 30_000
    writer.send(chunk, event=True)  # more than the socket buffers: the rest waits
    assert writer.pending and wakes == [1]
    writer.send(chunk, event=True)  # still waiting: no new wake
    assert wakes == [1]
    writer.send(chunk * 3, event=True)  # over the bound
    assert writer.overflowed and len(wakes) == 2
    received = b""
    client.settimeout(5)
    while len(received) < 2 * len(chunk):
        received += client.recv(65536)
        writer.flush()
    assert received == chunk * 2  # in order, whole, the part sent at once included


def test_sockets_sharing_frames_get_each_event_once_whatever_they_were_sent_before(pair):
    """A long fan-out gives the sockets it has yet to write an event that came meanwhile;
    the next fan-out carries that event again for the sockets written before it came: one
    that already has it skips it, the others get it, each in order."""
    server, client = pair
    other_server, other_client = socket.socketpair()
    try:
        early, late = ws.Subscription(lambda m: True), ws.Subscription(lambda m: True)
        early.go_live(ws.SocketWriter(server, send_timeout=10), floor=0)
        late.go_live(ws.SocketWriter(other_server, send_timeout=10), floor=0)
        joined: dict = {}
        early.deliver([(1, b"[1]")], joined)  # written before event 2 came
        late.deliver([(1, b"[1]"), (2, b"[2]")], {})  # after: it gets 2 at once
        joined = {}
        for subscription in (early, late):  # the next batch: 2 again, and 3
            subscription.deliver([(2, b"[2]"), (3, b"[3]")], joined)
        assert read_all(client, 9) == b"[1][2][3]"
        assert read_all(other_client, 9) == b"[1][2][3]"
        other_client.settimeout(0.2)
        with pytest.raises(TimeoutError):
            other_client.recv(100)  # nothing twice
        assert len(joined) == 2  # one join per starting point, not per socket
    finally:
        other_server.close()
        other_client.close()


def upgraded(sock: socket.socket):
    """simple-websocket's Server on `sock`, as flask-sock makes it, its socket then taken
    over by a SocketWriter (orchestrator_api/ws.py)."""
    import simple_websocket

    environ = {
        "werkzeug.socket": sock,
        "HTTP_HOST": "x",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_UPGRADE": "websocket",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    server = simple_websocket.Server(environ)
    server.sock = ws.SocketWriter(sock, send_timeout=10)
    return server


def test_the_pinger_pings_closes_the_silent_and_forgets_ended_connections(pair):
    """Every interval a ping; a client that never answers is closed with 1008; and a
    connection that ended is not kept alive until its next ping falls due."""
    import gc
    import weakref

    server_sock, client = pair
    stopped = threading.Event()
    pinger = ws.Pinger(0.3, stopped)
    try:
        silent = upgraded(server_sock)
        pinger.watch(silent)
        client.settimeout(5)
        received = b""
        while b"\x88" not in received:  # the handshake answer, a ping, then the close
            received += client.recv(65536)
        assert b"\x89\x00" in received
        close = received[received.index(b"\x88") :]
        assert int.from_bytes(close[2:4], "big") == 1008

        other_server, other_client = socket.socketpair()
        gone = upgraded(other_server)
        pinger.watch(gone)
        other_client.close()  # the client goes: simple-websocket's reader ends
        gone.thread.join(5)
        held = weakref.ref(gone)
        del gone
        gc.collect()
        assert held() is None, "the pinger still holds an ended connection"
    finally:
        stopped.set()
