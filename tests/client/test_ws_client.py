"""The client's WebSocket (orchestrator_client/ws_client.py) against a scripted server that
sends its first frames in the same write as its 101 answer, as a busy client reads a
stream refused after the upgrade (or /ws/system's first message): in one read."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
import time

import pytest
from simple_websocket import ConnectionClosed

from orchestrator_client import EventStream, NotFound
from orchestrator_client.ws_client import Client

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOLD_SECONDS = 3  # the server keeps the connection open this long unless the client goes


def frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def close_frame(code: int, reason: str) -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason.encode())


@contextlib.contextmanager
def scripted_server(first_frames: bytes):
    """A server answering each upgrade with its 101 and `first_frames` in one write, then
    holding the connection until the client closes it (or HOLD_SECONDS)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
                + first_frames
            )
            conn.settimeout(HOLD_SECONDS)
            with contextlib.suppress(OSError):
                while conn.recv(4096):  # until the client closes (its close frame, its end)
                    pass

    def accept_loop() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        listener.close()


def test_a_close_that_comes_with_the_handshake_answer_is_read():
    """simple-websocket's client left it unread and, when the server ended the
    connection, reported 1005 (no status)."""
    with scripted_server(close_frame(4404, "session x not found")) as url:
        client = Client.connect(url + "/ws/sessions/x")
        began = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=HOLD_SECONDS + 2)
    assert (closed.value.reason, closed.value.message) == (4404, "session x not found")
    assert time.monotonic() - began < 1  # at once, not when the server gives up


def test_a_message_that_comes_with_the_handshake_answer_is_received_at_once():
    """It waited for the next frame (on /ws/system: the next system.health)."""
    with scripted_server(frame(0x1, b'{"type": "system.health"}')) as url:
        client = Client.connect(url + "/ws/system")
        try:
            assert client.receive(timeout=1) == '{"type": "system.health"}'
        finally:
            client.close()


def test_the_event_stream_raises_the_refusal_that_comes_with_the_handshake_answer():
    """EventStream: NotFound, not a reconnection after a 1005."""
    with scripted_server(close_frame(4404, "agent y not found")) as url:
        stream = EventStream(url, "/ws/agents/y", reconnect=False)
        with pytest.raises(NotFound):
            next(iter(stream))
