"""The WebSocket gateway (CONTRACT section 9): five streams served by flask-sock.

One `Hub` per web process reads the Redis Stream of events (no Redis connection per
client) and writes each event to the sockets that want it. Each event is framed once per
process, not once per socket, and the events that arrive within a few milliseconds go to
a socket in one write: at a thousand sockets, the work is the writes. Every byte to a
client goes through its `SocketWriter`, which never blocks the hub: what the client has
not taken yet waits in a bounded buffer, and a client that does not read is disconnected
instead of slowing the others. Ids are gapless: a gap in the stream (an XADD lost to a
crash or a Redis restart) is filled from PostgreSQL, which also serves `?last_event_id=`
resumes.
"""

from __future__ import annotations

import json
import logging
import os
import select as io_select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

import redis as redis_lib
from flask import Blueprint, current_app, request
from flask_sock import Sock
from sqlalchemy import func, select
from wsproto.frame_protocol import CloseReason, FrameProtocol

from orchestrator_api import ws_access
from shared import events, relay
from shared.metrics import WEBSOCKET_CONNECTIONS
from shared.models import Agent, Task, WorkSession

log = logging.getLogger(__name__)

# Per socket: what the client has not read yet, at most (about 10,000 events).
BUFFER_BYTES = 4 * 1024 * 1024
# Events that arrive within this long of the last write go to each socket in one write.
FAN_OUT_INTERVAL_SECONDS = 0.025
CLOSE_GRACE_SECONDS = 1.0
# A socket's own thread sleeps until its client sends something, or this long: then it
# retries what waits for a slow client and notices a shutdown.
SOCKET_THREAD_WAKE_SECONDS = 0.5
GOING_AWAY_CLOSE = 1001
SLOW_CLIENT_CLOSE = 1013
NOT_FOUND_CLOSE = 4404
BAD_REQUEST_CLOSE = 4400
# How long a client may take nothing before the socket is dropped.
SEND_TIMEOUT_SECONDS = float(os.environ.get("WS_SEND_TIMEOUT_SECONDS", "10"))
SEND_BUFFER_BYTES = 64 * 1024
OPCODE_CLOSE = 0x8  # control frames: 0x8 close, 0x9 ping, 0xA pong

blp = Blueprint("ws", __name__)
sock = Sock()
Filter = Callable[[dict], bool]


class SocketWriter:
    """Stands in for a client's socket (simple-websocket's own frames, pings and closes
    come through here too, so frames never interleave): bytes are written without
    blocking, and what the client cannot take yet waits, up to BUFFER_BYTES.

    What waits is a queue of writes, each whole frames. A control frame (ping, pong,
    close) goes ahead of the writes not yet begun, so a client busy with a backlog still
    answers pings in time; after a close, the data still waiting is dropped (nothing may
    follow a close, and the client resumes from its last id)."""

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.offset = 0  # how much of the first write has gone out
        self.lock = threading.Lock()
        self.overflowed = False  # events were dropped: the client must be disconnected
        self.broken = False
        self.closed = False  # a close frame was queued: nothing more goes out after it
        self.waiting_since: float | None = None  # since when bytes wait without progress
        raw.setblocking(False)

    def send(self, data: bytes, *, event: bool = False) -> int:
        with self.lock:
            if self.closed or not data:
                return len(data)
            if event and (self.overflowed or self.pending_bytes + len(data) > BUFFER_BYTES):
                self.overflowed = True
                return 0
            if not event and _is_control(data):
                self._queue_control(data)
            else:
                self.pending.append(data)
                self.pending_bytes += len(data)
            self._write()
        return len(data)

    def _queue_control(self, frames: bytes) -> None:
        begun = self.pending.popleft() if self.offset else None  # a frame is never cut
        if _closes(frames):
            self.closed = True
            self.pending.clear()
            self.pending.append(frames)
        else:
            self.pending.appendleft(frames)
        if begun is not None:
            self.pending.appendleft(begun)
        self.pending_bytes = sum(len(write) for write in self.pending)

    def flush(self) -> bool:
        """Write what waits; True once nothing does."""
        with self.lock:
            self._write()
            return not self.pending

    def drain(self, timeout: float) -> None:
        """Give the client up to `timeout` seconds to take what waits."""
        deadline = time.monotonic() + timeout
        while not self.flush() and not self.broken and time.monotonic() < deadline:
            try:
                io_select.select(
                    [], [self.raw], [], max(0.0, min(0.1, deadline - time.monotonic()))
                )
            except (ValueError, OSError):  # closed meanwhile (the client went)
                return

    def stalled(self) -> bool:
        """Whether bytes have waited SEND_TIMEOUT_SECONDS without the client taking any."""
        with self.lock:
            since = self.waiting_since
        return since is not None and time.monotonic() - since > SEND_TIMEOUT_SECONDS

    def _write(self) -> None:
        progressed = False
        while self.pending and not self.broken:
            first = self.pending[0]
            try:
                sent = self.raw.send(memoryview(first)[self.offset :])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.broken = True  # the reader thread notices the dead socket too
                self.pending.clear()
                self.pending_bytes = self.offset = 0
                break
            progressed = True
            self.offset += sent
            if self.offset < len(first):
                break
            self.pending.popleft()
            self.pending_bytes -= len(first)
            self.offset = 0
        if not self.pending:
            self.waiting_since = None
        elif progressed or self.waiting_since is None:
            self.waiting_since = time.monotonic()

    def recv(self, size: int) -> bytes:
        """For simple-websocket's reader thread: waits for data like a blocking socket, and
        notices (within a second) when the socket is closed under it."""
        while True:
            try:
                return self.raw.recv(size)
            except (BlockingIOError, InterruptedError):
                pass
            try:
                io_select.select([self.raw], [], [], 1.0)
            except (ValueError, OSError):  # closed meanwhile
                raise OSError("the socket was closed") from None

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _is_control(frames: bytes) -> bool:
    return frames[0] & 0x0F >= OPCODE_CLOSE


def _closes(frames: bytes) -> bool:
    """Whether these control frames (unmasked, payloads of at most 125 bytes) hold a close."""
    position = 0
    while position + 1 < len(frames):
        if frames[position] & 0x0F == OPCODE_CLOSE:
            return True
        position += 2 + (frames[position + 1] & 0x7F)
    return False


class Subscription:
    """One socket's share of the stream. Until the socket has been sent what it missed
    (a resume), its events are held; then they go to its writer, skipping ids the resume
    already covered."""

    def __init__(self, wants: Filter) -> None:
        self.wants = wants
        self.writer: SocketWriter | None = None
        self.floor = 0  # ids up to here were sent by the resume
        self.held: list[tuple[int, bytes]] = []
        self.held_bytes = 0
        self.lock = threading.Lock()

    @property
    def overflowed(self) -> bool:
        return self.held_bytes > BUFFER_BYTES or (
            self.writer is not None and self.writer.overflowed
        )

    def deliver(self, frames: list[tuple[int, bytes]]) -> None:
        """Frames of wanted events, oldest first, with their ids (0: not a stream event)."""
        if self.writer is None:
            with self.lock:
                if self.writer is None:
                    self.held += frames
                    self.held_bytes += sum(len(frame) for _, frame in frames)
                    return
        self._write(frames)

    def go_live(self, writer: SocketWriter, floor: int) -> None:
        with self.lock:
            self.floor = floor
            self._write(self.held, writer)
            self.held, self.held_bytes = [], 0
            self.writer = writer

    def _write(self, frames: list[tuple[int, bytes]], writer: SocketWriter | None = None) -> None:
        floor = self.floor
        data = b"".join(frame for seq, frame in frames if seq == 0 or seq > floor)
        if data:
            (writer or self.writer).send(data, event=True)


class Hub:
    """Per process: one stream reader and one health ticker feeding every socket."""

    def __init__(self, ext) -> None:
        self.ext = ext
        self.settings = ext.settings
        self.redis = redis_lib.Redis.from_url(
            ext.settings.redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        self.subscriptions: set[Subscription] = set()
        self.system_subscriptions: set[Subscription] = set()
        self.lock = threading.Lock()
        self.framing = FrameProtocol(client=False, extensions=[])  # the reader's thread only
        self.batch: list[tuple[dict, int, bytes]] = []  # read, not yet written
        self.fanned_out_at = 0.0
        self.last_seq = relay.latest_seq(ext.database)
        self.health: dict | None = None
        self.stopped = threading.Event()
        self.closing = threading.Event()  # set on shutdown: sockets close with 1001
        threading.Thread(target=self._read_stream, name="ws-hub-reader", daemon=True).start()
        threading.Thread(target=self._tick_health, name="ws-hub-health", daemon=True).start()

    def subscribe(self, wants: Filter, *, system: bool = False) -> Subscription:
        subscription = Subscription(wants)
        with self.lock:
            (self.system_subscriptions if system else self.subscriptions).add(subscription)
            WEBSOCKET_CONNECTIONS.set(self.connections())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions.discard(subscription)
            self.system_subscriptions.discard(subscription)
            WEBSOCKET_CONNECTIONS.set(self.connections())

    def connections(self) -> int:
        return len(self.subscriptions) + len(self.system_subscriptions)

    def _dispatch(self, message: dict, raw: str | None = None) -> None:
        frame = self.framing.send_data(raw or json.dumps(message), fin=True)
        self.batch.append((message, int(message["id"]), frame))

    def _fan_out(self) -> None:
        """Write the batch read since the last time: one write per socket that wants any."""
        batch, self.batch = self.batch, []
        self.fanned_out_at = time.monotonic()
        if not batch:
            return
        with self.lock:
            targets = list(self.subscriptions)
        for subscription in targets:
            wants = subscription.wants
            frames = [(seq, frame) for message, seq, frame in batch if wants(message)]
            if frames:
                subscription.deliver(frames)

    def _catch_up(self, before: int | None = None) -> None:
        """Deliver from PostgreSQL what the stream did not carry, up to `before`."""
        if before is None and relay.latest_seq(self.ext.database) < self.last_seq:
            log.warning("event ids went back (database restored or recreated): following it")
            self.last_seq = relay.latest_seq(self.ext.database)
        for message in relay.events_since(self.ext.database, self.last_seq, before):
            self._dispatch(message)
            self.last_seq = int(message["id"])

    def _read_stream(self) -> None:
        while not self.stopped.is_set():
            # Right after a write, let events gather for a moment: a thousand sockets
            # cost a thousand writes per batch, however few events it holds.
            wait = self.fanned_out_at + FAN_OUT_INTERVAL_SECONDS - time.monotonic()
            if wait > 0:
                self.stopped.wait(wait)
            try:
                response = self.redis.xread(
                    {relay.STREAM_KEY: f"{self.last_seq}-0"}, block=1000, count=1000
                )
            except redis_lib.RedisError as exc:
                log.warning("event stream unavailable (%s); reading from the database", exc)
                response = None
                self.stopped.wait(0.5)
            try:
                if not response:
                    self._catch_up()
                else:
                    for stream_id, fields in response[0][1]:
                        seq = int(stream_id.split(b"-")[0])
                        if seq <= self.last_seq:
                            continue
                        if seq > self.last_seq + 1:
                            self._catch_up(before=seq)
                        raw = fields[b"m"].decode()
                        self._dispatch(json.loads(raw), raw)
                        self.last_seq = seq
                self._fan_out()
            except Exception:
                log.exception("event fan-out failed; retrying")
                self.batch = []
                self.stopped.wait(1.0)

    def _tick_health(self) -> None:
        while not self.stopped.is_set():
            try:
                self.health = system_health(self.ext)
                frame = FrameProtocol(client=False, extensions=[]).send_data(
                    json.dumps(self.health), fin=True
                )
                with self.lock:
                    targets = list(self.system_subscriptions)
                for subscription in targets:
                    subscription.deliver([(0, frame)])
            except Exception:
                log.exception("system health tick failed")
            self.stopped.wait(self.settings.system_event_interval_seconds)

    def current_health(self) -> dict:
        return self.health or system_health(self.ext)


def system_health(ext) -> dict:
    payload: dict = {"database": "ok", "redis": "ok", "workers": 0, "counts": {}}
    try:
        with ext.database.session() as db:
            for name, model in (("sessions", WorkSession), ("agents", Agent), ("tasks", Task)):
                rows = db.execute(select(model.status, func.count()).group_by(model.status))
                payload["counts"][name] = {str(s): n for s, n in rows}
    except Exception:
        payload["database"] = "unavailable"
    try:
        ext.redis.ping()
    except redis_lib.RedisError:
        payload["redis"] = "unavailable"
    if payload["redis"] == "ok":
        try:
            payload["workers"] = len(ext.celery.control.ping(timeout=0.5) or [])
        except Exception:
            payload["workers"] = 0
    healthy = payload["database"] == payload["redis"] == "ok" and payload["workers"] > 0
    payload["status"] = "ok" if healthy else "degraded"
    now = time.time()
    return {
        "id": f"system-{int(now * 1000)}",
        "type": events.SYSTEM_HEALTH,
        "payload": payload,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
    }


_hub_lock = threading.Lock()


def hub() -> Hub:
    ext = current_app.extensions["orchestrator"]
    with _hub_lock:
        if ext.hub is None:
            ext.hub = Hub(ext)
        return ext.hub


# Which events each stream carries.
def _session_events(message: dict) -> bool:
    return message["type"].startswith(("session.", "task."))


def _for_session(session_id: str) -> Filter:
    return lambda m: _session_events(m) and m["payload"].get("session_id") == session_id


def _agent_events(message: dict) -> bool:
    return message["type"].startswith("agent.")


def _for_agent(agent_id: str) -> Filter:
    def wants(message: dict) -> bool:
        if message["payload"].get("agent_id") != agent_id:
            return False
        return _agent_events(message) or message["type"] in ("task.assigned", "task.status_changed")

    return wants


def _close(ws, code: int, reason: str) -> None:
    """Close with a code and reason the client can read: wait a moment for its closing
    reply, since a socket closed with unread input is reset and the reset can discard
    our close frame before the client reads it."""
    ws.close(code, reason)
    deadline = time.monotonic() + CLOSE_GRACE_SECONDS
    while time.monotonic() < deadline:
        if ws.close_reason != CloseReason.NO_STATUS_RCVD:  # the client's reply was read
            return
        time.sleep(0.02)


def _serve_one(ws, model, raw_id: str, filter_for: Callable[[str], Filter]) -> None:
    """The stream of one session or agent; an unknown or malformed id closes the socket
    with a reason."""
    what = "session" if model is WorkSession else "agent"
    try:
        entity_id = uuid.UUID(raw_id)
    except ValueError:
        _close(ws, BAD_REQUEST_CLOSE, f"{what} id is not a UUID: not found")
        return
    with current_app.extensions["orchestrator"].database.session() as db:
        found = db.get(model, entity_id) is not None
    if not found:
        _close(ws, NOT_FOUND_CLOSE, f"{what} {entity_id} not found")
        return
    _serve(ws, filter_for(str(entity_id)))


def _serve(ws, wants: Filter) -> None:
    """Resume from ?last_event_id= if given, then the live stream, until the client goes."""
    events_hub = hub()
    # Everything published after the handshake has a larger id than what the hub has
    # already fanned out; what is fanned out before the subscription below is read back.
    connected_at = events_hub.last_seq
    subscription = events_hub.subscribe(wants)
    try:
        writer = _take_over_socket(ws)
        last_event_id = request.args.get("last_event_id")
        floor = _resume(ws, wants, last_event_id, connected_at)
        subscription.go_live(writer, floor)
        _pump(ws, events_hub, subscription, writer)
    finally:
        events_hub.unsubscribe(subscription)


def _take_over_socket(ws) -> SocketWriter:
    """Every byte to the client goes through a SocketWriter from here on."""
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    writer = SocketWriter(ws.sock)
    ws.sock = writer
    return writer


def _pump(ws, events_hub: Hub, subscription: Subscription, writer: SocketWriter) -> None:
    """The hub writes the events; this thread answers the client, retries what waits for
    a slow client, and ends the connection when the client is too slow or gone, or the
    process shuts down (then the client gets a 1001 close and reconnects)."""
    while ws.connected and not writer.broken:
        if subscription.overflowed or writer.stalled():
            ws.close(SLOW_CLIENT_CLOSE, "client too slow: event buffer full")
            writer.drain(SEND_TIMEOUT_SECONDS)
            return
        ws_access.renew_lease()
        if events_hub.closing.is_set():
            _close(ws, GOING_AWAY_CLOSE, "server shutting down; reconnect with last_event_id")
            writer.drain(CLOSE_GRACE_SECONDS)
            return
        writer.flush()
        _answer_client(ws, timeout=SOCKET_THREAD_WAKE_SECONDS)


def _resume(ws, wants: Filter, last_event_id: str | None, connected_at: int) -> int:
    """Send the events after `last_event_id` (or after the connection, without one);
    returns the newest id already covered."""
    after = connected_at
    if last_event_id is not None:
        try:
            after = int(last_event_id)
            if after < 0:
                raise ValueError
        except ValueError:
            _send_error(ws, "last_event_id must be an event id as received; streaming live only")
            after = connected_at
            last_event_id = None
    database = current_app.extensions["orchestrator"].database
    oldest = relay.oldest_seq(database) if last_event_id is not None else 0
    if oldest and after < oldest - 1:
        ws.send(
            json.dumps(
                {
                    "id": str(after),
                    "type": "events.dropped",
                    "payload": {
                        "last_event_id": str(after),
                        "oldest_available_id": str(oldest),
                        "message": "Events before the oldest available were dropped",
                    },
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
        )
    covered = after
    for message in relay.events_since(database, after):
        covered = int(message["id"])
        if wants(message):
            ws.send(json.dumps(message))
    return covered


def _answer_client(ws, timeout: float) -> None:
    """Clients need send nothing; a "ping" gets a "pong", anything else an error frame."""
    incoming = ws.receive(timeout=timeout)
    if incoming is None:
        return
    if isinstance(incoming, str) and incoming.strip().lower() in ("ping", '{"type": "ping"}'):
        ws.send(json.dumps({"type": "pong"}))
    else:
        _send_error(ws, "Messages from clients are not understood; this stream is one-way")


def _send_error(ws, text_message: str) -> None:
    ws.send(json.dumps({"type": "error", "payload": {"message": text_message}}))


@sock.route("/ws/sessions", bp=blp)
def all_sessions(ws):
    _serve(ws, _session_events)


@sock.route("/ws/sessions/<session_id>", bp=blp)
def one_session(ws, session_id):
    _serve_one(ws, WorkSession, session_id, _for_session)


@sock.route("/ws/agents", bp=blp)
def all_agents(ws):
    _serve(ws, _agent_events)


@sock.route("/ws/agents/<agent_id>", bp=blp)
def one_agent(ws, agent_id):
    _serve_one(ws, Agent, agent_id, _for_agent)


@sock.route("/ws/system", bp=blp)
def system(ws):
    events_hub = hub()
    subscription = events_hub.subscribe(lambda m: True, system=True)
    try:
        writer = _take_over_socket(ws)
        ws.send(json.dumps(events_hub.current_health()))
        subscription.go_live(writer, 0)
        _pump(ws, events_hub, subscription, writer)
    finally:
        events_hub.unsubscribe(subscription)


blp.before_request(ws_access.check_handshake)
blp.teardown_request(ws_access.release_lease)


def register(app) -> None:
    # Ping frames find dead peers and clients that stopped reading: no pong, closed (1008).
    ping_interval = float(os.environ.get("WS_PING_INTERVAL_SECONDS", "20"))
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": ping_interval})
    app.register_blueprint(blp)
