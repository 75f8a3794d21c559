"""The WebSocket gateway (CONTRACT section 9): five streams served by flask-sock.

Each socket subscribes to its process's hub (orchestrator_api/ws_hub.py), which writes the
events it wants through the socket's writer (orchestrator_api/ws_sockets.py). Here: the
routes, what each stream carries, a resume from `?last_event_id=` (read from PostgreSQL),
and the socket's own thread, which answers its client and ends the connection when the
client is too slow or gone, or the process shuts down.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable

from flask import Blueprint, current_app, g, request
from flask_sock import Sock
from marshmallow import ValidationError
from simple_websocket import ConnectionClosed
from sqlalchemy import select

from orchestrator_api import ws_access
from orchestrator_api.schemas.agents import AgentSchema, HeartbeatSchema
from orchestrator_api.ws_hub import Hub, hub
from orchestrator_api.ws_sockets import Filter, SocketWriter, Subscription, cooperative
from shared import pools, relay
from shared.errors import AgentNotFound
from shared.models import Agent, WorkSession

CLOSE_GRACE_SECONDS = 1.0
# How long a close with a reason waits, at most, for the client to answer it (its closing
# reply, or the end of its connection): a busy client may take more than a second to read
# it. A client that answers ends the wait at once.
CLOSE_REPLY_WAIT_SECONDS = 5.0
# A socket's own thread sleeps until its client sends something or it is woken (bytes
# wait for a slow client, events overflowed, the process shuts down). While bytes wait it
# retries them this often; otherwise it looks around this often, just in case: ten
# thousand idle sockets must cost next to nothing.
SOCKET_THREAD_WAKE_SECONDS = 0.5
IDLE_WAKE_SECONDS = 120.0
GOING_AWAY_CLOSE = 1001
INTERNAL_ERROR_CLOSE = 1011
SLOW_CLIENT_CLOSE = 1013
NOT_FOUND_CLOSE = 4404
BAD_REQUEST_CLOSE = 4400
FORBIDDEN_CLOSE = 4403
SEND_BUFFER_BYTES = 64 * 1024
# A resume reads this many events at a time and sends the next page once the client has
# taken the last: however far behind it is, it holds one page in memory.
RESUME_PAGE = 1000
# An agent's heartbeat on its stream (orchestrator_api/ws.py `_heartbeats_of`).
HEARTBEAT_ACK = "heartbeat.ack"
HEARTBEAT_ROLES = ("admin", "operator", "agent")  # an agent only on its own stream
MAX_CLIENT_MESSAGE = 4096  # characters of a JSON message from a client, at most
# Made once: a schema's construction costs more than a heartbeat's validation.
HEARTBEAT_SCHEMA = HeartbeatSchema()
AGENT_SCHEMA = AgentSchema()
# What a socket closed by its client raises when the server next touches it.
CLIENT_GONE_ERRNOS = (errno.EBADF, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)

MessageHandler = Callable[[dict], dict]  # a client's JSON message -> the answer

log = logging.getLogger(__name__)
blp = Blueprint("ws", __name__)
sock = Sock()


# Which events each stream carries.
def _session_events(message: dict) -> bool:
    return message["type"].startswith(("session.", "task."))


def _for_session(session_id: str) -> Filter:
    return lambda m: _session_events(m) and m["payload"].get("session_id") == session_id


def _agent_events(message: dict) -> bool:
    return message["type"].startswith("agent.")


def _for_agent(agent_id: str) -> Filter:
    def wants(message: dict) -> bool:
        payload = message["payload"]
        if (
            message["type"] == "task.status_changed"
            and payload.get("previous_agent_id") == agent_id
        ):
            return True  # a task taken back from it
        if payload.get("agent_id") != agent_id:
            return False
        return _agent_events(message) or message["type"] in ("task.assigned", "task.status_changed")

    return wants


def _close(ws, code: int, reason: str) -> None:
    """Close with a code and reason the client can read, then wait until the client has
    answered (at most CLOSE_REPLY_WAIT_SECONDS), since a socket closed with unread input
    is reset and the reset can discard our close frame before the client reads it.
    simple-websocket's reader ends once it has read the client's closing reply or the end
    of its connection (it never records the reply's code after our close: answering the
    reply fails first, so `close_reason` is no sign of it)."""
    ws.close(code, reason)
    ws.thread.join(CLOSE_REPLY_WAIT_SECONDS)


def _until_the_client_goes(route: Callable) -> Callable:
    """A client may close its socket at any moment, even while the server is still setting
    it up (simple-websocket's reader thread then closes the socket under the route): that
    is the end of the connection, not an error. Any other failure after the upgrade (the
    database refusing connections, say) closes the socket with 1011, so the client
    reconnects with its last id: an exception escaping the route would have Flask answer
    HTTP into the upgraded socket, which no client can read."""

    @functools.wraps(route)
    def serve(ws, *args, **kwargs):
        try:
            route(ws, *args, **kwargs)
        except OSError as exc:
            if ws.connected and exc.errno not in CLIENT_GONE_ERRNOS:
                _fail(ws, exc)
            else:
                log.debug("websocket client gone: %s", exc)
        except ConnectionClosed:
            raise  # flask-sock's: the client went
        except Exception as exc:
            _fail(ws, exc)

    return serve


def _fail(ws, exc: Exception) -> None:
    log.error("websocket stream failed: %s: %s", exc.__class__.__name__, exc, exc_info=exc)
    if ws.connected:
        with contextlib.suppress(Exception):
            ws.close(INTERNAL_ERROR_CLOSE, "server error; reconnect with last_event_id")


def _serve_one(
    ws,
    model,
    raw_id: str,
    filter_for: Callable[[str], Filter],
    answer_for: Callable[[uuid.UUID], MessageHandler] | None = None,
) -> None:
    """The stream of one session or agent; an unknown or malformed id closes the socket
    with a reason. `answer_for`: what answers the client's JSON messages on it."""
    what = "session" if model is WorkSession else "agent"
    try:
        entity_id = uuid.UUID(raw_id)
    except ValueError:
        _close(ws, BAD_REQUEST_CLOSE, f"{what} id is not a UUID: not found")
        return
    # Its pool, in one statement: no ORM object per connecting client.
    with current_app.extensions["orchestrator"].database.engine.connect() as connection:
        pool = connection.scalar(select(model.pool).where(model.id == entity_id))
    allowed = g.get("stream_pools")
    if pool is None or (allowed is not None and pool not in allowed):
        _close(ws, NOT_FOUND_CLOSE, f"{what} {entity_id} not found")
        return
    answer = answer_for(entity_id) if answer_for is not None else None
    _serve(ws, filter_for(str(entity_id)), route=str(entity_id), answer=answer)


def _serve(
    ws, wants: Filter, route: str | None = None, answer: MessageHandler | None = None
) -> None:
    """Resume from ?last_event_id= if given, then the live stream, until the client goes.
    `route`: the session or agent id every wanted event names (the hub finds the socket
    by it); `answer`: what the stream does with a JSON message from its client."""
    events_hub = hub()
    # What the hub fanned out after the handshake but before the subscription below is
    # read back by the resume (_note_where_the_stream_was).
    connected_at = g.get("ws_connected_at", events_hub.last_seq)
    subscription = events_hub.subscribe(wants, route=route)
    try:
        writer = _take_over_socket(ws)
        last_event_id = request.args.get("last_event_id")
        floor = _resume(ws, writer, wants, last_event_id, connected_at)
        if floor is None:  # later events must not follow an unfinished resume
            _end_unfinished(ws, events_hub, writer)
            return
        subscription.go_live(writer, floor)
        _pump(ws, events_hub, subscription, writer, answer)
    finally:
        events_hub.unsubscribe(subscription)


def _take_over_socket(ws) -> SocketWriter:
    """Every byte to the client goes through a SocketWriter from here on."""
    try:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        send_timeout = current_app.extensions["orchestrator"].settings.ws_send_timeout_seconds
        writer = SocketWriter(ws.sock, send_timeout=send_timeout, wake=ws.event.set)
    except OSError:  # the client closed already (its socket with it)
        raise ConnectionClosed(ws.close_reason, ws.close_message) from None
    ws.sock = writer
    _drop_the_handshake(ws)
    pinger = hub().pinger
    if pinger is not None:
        pinger.watch(ws)
    return writer


class _Upgraded:
    """Stands in for wsproto's HTTP/1.1 handshake once the upgrade is done."""

    @staticmethod
    def events():
        return iter(())


def _drop_the_handshake(ws) -> None:
    """wsproto keeps the upgrade's HTTP/1.1 state (an h11 connection, the request) for the
    socket's life, though after the upgrade it only asks it for events, of which it has
    none left: a few KB a socket, tens of MB at ten thousand."""
    protocol = ws.ws
    handshake = getattr(protocol, "handshake", None)
    if protocol.connection is not None and not getattr(handshake, "_events", True):
        protocol.handshake = _Upgraded()


def _pump(
    ws,
    events_hub: Hub,
    subscription: Subscription,
    writer: SocketWriter,
    answer: MessageHandler | None = None,
) -> None:
    """The hub writes the events; this thread answers the client, retries what waits for
    a slow client, and ends the connection when the client is too slow or gone, or the
    process shuts down (then the client gets a 1001 close and reconnects)."""
    while ws.connected and not writer.broken:
        if subscription.overflowed or writer.stalled():
            ws.close(SLOW_CLIENT_CLOSE, "client too slow: event buffer full")
            writer.drain(writer.send_timeout)
            return
        if events_hub.closing.is_set():
            _close(ws, GOING_AWAY_CLOSE, "server shutting down; reconnect with last_event_id")
            writer.drain(CLOSE_GRACE_SECONDS)
            return
        all_sent = writer.flush()
        _answer_client(ws, IDLE_WAKE_SECONDS if all_sent else SOCKET_THREAD_WAKE_SECONDS, answer)


def _resume(
    ws, writer: SocketWriter, wants: Filter, last_event_id: str | None, connected_at: int
) -> int | None:
    """Send the events after `last_event_id` (or after the connection, without one), every
    one still retained however many, a page at a time as the client takes them; events
    no longer retained are announced by an `events.dropped` message with the exact range.
    Returns the newest id covered (the live stream goes on from there), or None when the
    client went, stopped reading or the process is shutting down before the end."""
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
    if last_event_id is None and hub().last_seq == connected_at:
        # Nothing was fanned out since the handshake, so nothing was missed: no query (ten
        # thousand clients connecting at once need no database connection for it).
        return connected_at
    database = current_app.extensions["orchestrator"].database
    covered = after
    for page in relay.pages_since(database, after, page=RESUME_PAGE):
        first = int(page[0]["id"])
        if last_event_id is not None and first > covered + 1:
            # ids are gapless: the ones between were pruned (EVENT_RETENTION)
            _send_dropped(ws, covered, first)
        for message in page:
            covered = int(message["id"])
            if wants(message):
                ws.send(json.dumps(message))
        if not _client_took_it(ws, writer):
            return None
    return covered


def _client_took_it(ws, writer: SocketWriter) -> bool:
    """Wait until the client has taken what was sent; False if it is gone, has taken
    nothing for WS_SEND_TIMEOUT_SECONDS, or the process is shutting down."""
    while not writer.flush():
        if not ws.connected or writer.broken or writer.stalled() or hub().closing.is_set():
            return False
        writer.drain(SOCKET_THREAD_WAKE_SECONDS)
    return ws.connected and not writer.broken


def _end_unfinished(ws, events_hub: Hub, writer: SocketWriter) -> None:
    """A resume did not finish: the client resumes from the last id it got, elsewhere
    (shutdown, 1001) or again when it reads (1013); or it is gone already."""
    if not ws.connected or writer.broken:
        return
    if events_hub.closing.is_set():
        _close(ws, GOING_AWAY_CLOSE, "server shutting down; reconnect with last_event_id")
        writer.drain(CLOSE_GRACE_SECONDS)
    else:
        ws.close(SLOW_CLIENT_CLOSE, "client too slow: took nothing while resuming")
        writer.drain(writer.send_timeout)


def _send_dropped(ws, last_event_id: int, oldest_available_id: int) -> None:
    """Events after `last_event_id` and before `oldest_available_id` are gone."""
    ws.send(
        json.dumps(
            {
                "id": str(last_event_id),
                "type": "events.dropped",
                "payload": {
                    "last_event_id": str(last_event_id),
                    "oldest_available_id": str(oldest_available_id),
                    "message": "Events before the oldest available were dropped",
                },
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
    )


def _answer_client(ws, timeout: float, answer: MessageHandler | None = None) -> None:
    """Sleep until the client sends something or the socket is woken (ws.event: set by
    simple-websocket's reader and by the SocketWriter), at most `timeout`; then answer
    every message received. Clients need send nothing; a "ping" gets a "pong"; a JSON
    object goes to the stream's `answer` (an agent's heartbeat), anything else gets an
    error frame."""
    ws.event.wait(timeout)
    while (incoming := ws.receive(timeout=0)) is not None:
        message = _json_object(incoming)
        if incoming == "ping" or (message is not None and message.get("type") == "ping"):
            ws.send(json.dumps({"type": "pong"}))
        elif message is not None and answer is not None:
            ws.send(json.dumps(answer(message)))
        else:
            _send_error(ws, "Messages from clients are not understood; this stream is one-way")


def _json_object(incoming: str | bytes) -> dict | None:
    if not isinstance(incoming, str) or len(incoming) > MAX_CLIENT_MESSAGE:
        return None
    if not incoming.lstrip().startswith("{"):
        return None
    try:
        message = json.loads(incoming)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _send_error(ws, text_message: str) -> None:
    ws.send(json.dumps({"type": "error", "payload": {"message": text_message}}))


def _error_frame(code: str, message: str, details: dict | None = None, **fields) -> dict:
    payload: dict = {"code": code, "message": message, **fields}
    if details:
        payload["details"] = details
    return {"type": "error", "payload": payload}


def _heartbeats_of(agent_id: uuid.UUID) -> MessageHandler:
    """An agent's stream takes its heartbeats: `{"type": "heartbeat", "current_load": N}`
    means what POST /api/v1/agents/{id}/heartbeat means, validated the same way, and is
    answered `heartbeat.ack` with the agent (as the HTTP answer) once committed. Only the
    agent's own token, an admin's or an operator's may send them (a viewer only reads).
    The socket's thread writes one heartbeat at a time, through the process's heartbeat
    writer (orchestrator_api/heartbeats.py), with the HTTP ones that arrive meanwhile."""
    role = g.get("stream_role")
    ext = current_app.extensions["orchestrator"]

    def answer(message: dict) -> dict:
        if message.get("type") != "heartbeat":
            return _error_frame(
                "VALIDATION_ERROR",
                'Messages on this stream: "ping", or {"type": "heartbeat", "current_load": N}',
            )
        if role not in HEARTBEAT_ROLES:
            return _error_frame(
                "FORBIDDEN", "This token may not send heartbeats", request="heartbeat"
            )
        body = {key: value for key, value in message.items() if key != "type"}
        try:
            loaded = HEARTBEAT_SCHEMA.load(body)
        except ValidationError as exc:
            return _error_frame(
                "VALIDATION_ERROR",
                "Invalid heartbeat",
                exc.normalized_messages(),
                request="heartbeat",
            )
        try:
            agent = ext.heartbeats.submit((agent_id, loaded["current_load"]))
        except AgentNotFound as exc:
            return _error_frame("AGENT_NOT_FOUND", exc.message, request="heartbeat")
        return {"type": HEARTBEAT_ACK, "payload": AGENT_SCHEMA.dump(agent)}

    return answer


def _serve_pool(ws, wants: Filter) -> None:
    """`?pool=NAME`: only the events of that pool's sessions and tasks, or agents."""
    pool = request.args.get("pool")
    allowed = g.get("stream_pools")  # a token scoped to pools sees only theirs
    if pool is not None and not pools.is_valid(pool):
        _close(ws, BAD_REQUEST_CLOSE, f"pool {pool[:50]!r}: a pool name is {pools.POOL_RULE}")
    elif pool is not None and allowed is not None and pool not in allowed:
        _close(ws, FORBIDDEN_CLOSE, f"this token may not read pool {pool!r}")
    elif pool is not None:
        _serve(ws, lambda m: wants(m) and m["payload"].get("pool") == pool)
    elif allowed is not None:
        _serve(ws, lambda m: wants(m) and m["payload"].get("pool") in allowed)
    else:
        _serve(ws, wants)


@sock.route("/ws/sessions", bp=blp)
@_until_the_client_goes
def all_sessions(ws):
    _serve_pool(ws, _session_events)


@sock.route("/ws/sessions/<session_id>", bp=blp)
@_until_the_client_goes
def one_session(ws, session_id):
    _serve_one(ws, WorkSession, session_id, _for_session)


@sock.route("/ws/agents", bp=blp)
@_until_the_client_goes
def all_agents(ws):
    _serve_pool(ws, _agent_events)


@sock.route("/ws/agents/<agent_id>", bp=blp)
@_until_the_client_goes
def one_agent(ws, agent_id):
    _serve_one(ws, Agent, agent_id, _for_agent, answer_for=_heartbeats_of)


@sock.route("/ws/system", bp=blp)
@_until_the_client_goes
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


def _note_where_the_stream_was() -> None:
    """Before the upgrade: the newest id the hub had fanned out. Everything after it goes
    to this client, live or read back by the resume, however long the route takes to
    subscribe after the 101 (a client may act as soon as it has the 101)."""
    g.ws_connected_at = hub().last_seq


blp.before_request(ws_access.check_handshake)
blp.before_request(_note_where_the_stream_was)
blp.teardown_request(ws_access.release_lease)


def register(app) -> None:
    # Ping frames find dead peers and clients that stopped reading: no pong, closed (1008).
    # Under gevent the hub's Pinger sends them (orchestrator_api/ws_sockets.py).
    ping_interval = app.extensions["orchestrator"].settings.ws_ping_interval_seconds
    options = {} if cooperative() else {"ping_interval": ping_interval}
    app.config.setdefault("SOCK_SERVER_OPTIONS", options)
    app.register_blueprint(blp)
