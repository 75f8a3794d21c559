"""The WebSocket gateway (CONTRACT section 9): five streams served by flask-sock.

Each socket subscribes to its process's hub (orchestrator_api/ws_hub.py), which writes the
events it wants through the socket's writer (orchestrator_api/ws_sockets.py). Here: the
routes, what each stream carries, a resume from `?last_event_id=` (read from PostgreSQL),
and the socket's own thread, which answers its client and ends the connection when the
client is too slow or gone, or the process shuts down.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable

from flask import Blueprint, current_app, request
from flask_sock import Sock
from wsproto.frame_protocol import CloseReason

from orchestrator_api import ws_access
from orchestrator_api.ws_hub import Hub, hub
from orchestrator_api.ws_sockets import SEND_TIMEOUT_SECONDS, Filter, SocketWriter, Subscription
from shared import relay
from shared.models import Agent, WorkSession

CLOSE_GRACE_SECONDS = 1.0
# A socket's own thread sleeps until its client sends something, or this long: then it
# retries what waits for a slow client and notices a shutdown.
SOCKET_THREAD_WAKE_SECONDS = 0.5
GOING_AWAY_CLOSE = 1001
SLOW_CLIENT_CLOSE = 1013
NOT_FOUND_CLOSE = 4404
BAD_REQUEST_CLOSE = 4400
SEND_BUFFER_BYTES = 64 * 1024

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
