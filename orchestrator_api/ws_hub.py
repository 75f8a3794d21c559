"""The per-process event hub of the WebSocket gateway.

One reader per web process follows the Redis Stream of events (no Redis connection per
client), frames each event once, and writes to each socket the events it wants. When a
fan-out wrote to many sockets it lets events gather for a moment, so each socket gets a
batch in one write (at a thousand sockets, the work is the writes; the moment grows with
the time a fan-out took, so a busy gateway writes bigger batches instead of falling
behind); a fan-out to a few sockets (an agent's own stream) is followed by none, so an
event waits for nothing. A long fan-out reads the stream as it goes, so the sockets it
has yet to write get what came meanwhile (LATE_EVENTS_EVERY). The sockets of one session
or agent are found by the ids an event names, not by asking every socket. Ids are
gapless: a gap in the stream (an XADD lost to a crash or a Redis restart) is filled from
PostgreSQL. The relays NOTIFY the newest id they numbered (shared/notify.py), so an idle
hub asks PostgreSQL only when the stream missed something, or every
HUB_SAFETY_POLL_SECONDS; while Redis is down it reads PostgreSQL when notified. A second
thread computes `system.health` while `/ws/system` sockets are open.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis as redis_lib
from flask import current_app
from sqlalchemy import func, select
from wsproto.frame_protocol import FrameProtocol

from orchestrator_api.ws_sockets import Filter, Pinger, Subscription, cooperative
from shared import events, notify, relay
from shared.metrics import WEBSOCKET_CONNECTIONS
from shared.models import Agent, Task, WorkSession

log = logging.getLogger(__name__)

# After a fan-out that wrote to more than GATHER_ABOVE_WRITES sockets, events that arrive
# within this long after it ended go to each socket in one write; when a fan-out took
# longer, they gather for GATHER_SHARE of its length (at most the second bound), so that
# fanning out takes about two thirds of the process however many sockets there are (ten
# thousand sockets cost ten thousand writes a batch, however few events it holds; the
# writes are the system calls themselves). After a smaller fan-out, none.
FAN_OUT_INTERVAL_SECONDS = 0.025
GATHER_SHARE = 0.5
MAX_GATHER_SECONDS = 0.25
GATHER_ABOVE_WRITES = 50
# A fan-out to many sockets reads the stream again (without waiting) after each this
# many sockets: what came meanwhile goes to the sockets it has yet to write, so no event
# waits for a whole fan-out to end before its own begins.
LATE_EVENTS_EVERY = 1000
# An idle hub (Redis up, no notification of an id it has not seen) reads PostgreSQL this
# often all the same; while Redis is down, at least this often.
HUB_SAFETY_POLL_SECONDS = 30.0
REDIS_DOWN_POLL_SECONDS = 1.0
# The payload fields by which an event finds the sockets of one session or agent.
ROUTING_FIELDS = ("session_id", "agent_id", "previous_agent_id")
# Events read from PostgreSQL at a time when the stream missed some.
CATCH_UP_PAGE = 10000


class Hub:
    """Per process: one stream reader and one health ticker feeding every socket."""

    def __init__(self, ext) -> None:
        self.ext = ext
        self.settings = ext.settings
        self.redis = redis_lib.Redis.from_url(
            ext.settings.redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        self.subscriptions: set[Subscription] = set()  # each of them...
        self.unrouted: set[Subscription] = set()  # ...and these see every event
        self.routed: dict[str, set[Subscription]] = {}  # the rest: by a payload id
        self.system_subscriptions: set[Subscription] = set()
        self.lock = threading.Lock()
        self.framing = FrameProtocol(client=False, extensions=[])  # the reader's thread only
        self.batch: list[tuple[dict, int, str]] = []  # read, not yet written
        self.fanned_out_at = 0.0
        self.gather_seconds = FAN_OUT_INTERVAL_SECONDS
        self.last_seq = relay.latest_seq(ext.database)
        self.database_read_at = time.monotonic()
        # the newest id a relay said it numbered (NOTIFY); None: ask PostgreSQL
        self.published_seq: int | None = self.last_seq
        self.notified = threading.Event()
        self.health: dict | None = None
        self.stopped = threading.Event()
        self.closing = threading.Event()  # set on shutdown: sockets close with 1001
        # Under gevent the sockets are pinged from here (in threads: by simple-websocket).
        self.pinger = (
            Pinger(ext.settings.ws_ping_interval_seconds, self.stopped) if cooperative() else None
        )
        notify.listener(notify.listen_url(ext.settings)).subscribe(
            notify.PUBLISHED_CHANNEL, self._published
        )
        threading.Thread(target=self._read_stream, name="ws-hub-reader", daemon=True).start()
        threading.Thread(target=self._tick_health, name="ws-hub-health", daemon=True).start()

    def subscribe(
        self, wants: Filter, *, system: bool = False, route: str | None = None
    ) -> Subscription:
        """`route`: the socket wants only events whose payload names this id in one of
        ROUTING_FIELDS (and `wants` decides among them)."""
        subscription = Subscription(wants, route=route)
        with self.lock:
            if system:
                self.system_subscriptions.add(subscription)
            else:
                self.subscriptions.add(subscription)
                if route is None:
                    self.unrouted.add(subscription)
                else:
                    self.routed.setdefault(route, set()).add(subscription)
            WEBSOCKET_CONNECTIONS.set(self.connections())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions.discard(subscription)
            self.system_subscriptions.discard(subscription)
            self.unrouted.discard(subscription)
            same_route = self.routed.get(subscription.route)
            if same_route is not None:
                same_route.discard(subscription)
                if not same_route:
                    del self.routed[subscription.route]
            WEBSOCKET_CONNECTIONS.set(self.connections())

    def shut_down(self) -> None:
        """Every socket closes with 1001: each is woken to see it."""
        self.closing.set()
        with self.lock:
            targets = list(self.subscriptions | self.system_subscriptions)
        for subscription in targets:
            subscription.wake()

    def _published(self, payload: str | None) -> None:
        """A relay numbered events up to `payload` (None: the listener reconnected, so
        some notifications may be lost)."""
        if payload is None or not payload.isdigit():
            self.published_seq = None
        elif self.published_seq is not None:
            self.published_seq = max(self.published_seq, int(payload))
        self.notified.set()

    def _database_has_more(self) -> bool:
        """Whether PostgreSQL may hold events the stream has not brought (or to look
        all the same: the safety poll)."""
        known = self.published_seq
        return (
            known is None
            or known > self.last_seq
            or time.monotonic() - self.database_read_at >= HUB_SAFETY_POLL_SECONDS
        )

    def connections(self) -> int:
        return len(self.subscriptions) + len(self.system_subscriptions)

    def _dispatch(self, message: dict, raw: str | None = None) -> None:
        self.batch.append((message, int(message["id"]), raw or json.dumps(message)))

    def _fan_out(self, pick_up_late: bool = False) -> None:
        """Write the batch read since the last time: one write per socket that wants any.
        `pick_up_late`: events that reach the stream meanwhile go to the sockets not yet
        written as well (see LATE_EVENTS_EVERY); the others get them next time."""
        batch, self.batch = self.batch, []
        began = self.fanned_out_at = time.monotonic()
        if not batch or not self.subscriptions:
            return  # no socket here: nothing to frame
        framed = [(m, seq, self.framing.send_data(raw, fin=True)) for m, seq, raw in batch]
        writes: dict[Subscription, list[tuple[int, bytes]]] = {}
        with self.lock:
            unrouted = list(self.unrouted)
            for message, seq, frame in framed:
                payload = message.get("payload") or {}
                for field in ROUTING_FIELDS:
                    route = payload.get(field)
                    if not isinstance(route, str):
                        continue
                    for subscription in self.routed.get(route, ()):
                        frames = writes.setdefault(subscription, [])
                        if (not frames or frames[-1][0] != seq) and subscription.wants(message):
                            frames.append((seq, frame))
        written = 0
        for subscription, frames in writes.items():
            if frames:
                subscription.deliver(frames)
                written += 1
        # Sockets of the same stream share one filter (/ws/sessions: `_session_events`):
        # it runs once per batch, and they get the same bytes.
        sharing: dict[Filter, list[Subscription]] = {}
        for subscription in unrouted:
            sharing.setdefault(subscription.wants, []).append(subscription)
        for wants, subscriptions in sharing.items():
            frames = [(seq, frame) for message, seq, frame in framed if wants(message)]
            joined: dict[int, tuple[bytes, int]] = {}
            for count, subscription in enumerate(subscriptions, 1):
                if pick_up_late and count % LATE_EVENTS_EVERY == 0:
                    late = self._read_late()
                    if late:
                        framed += late
                        frames += [(seq, frame) for message, seq, frame in late if wants(message)]
                        joined = {}
                if frames:
                    subscription.deliver(frames, joined)
                    written += 1
        self.fanned_out_at = time.monotonic()
        took = self.fanned_out_at - began
        at_least = FAN_OUT_INTERVAL_SECONDS if written > GATHER_ABOVE_WRITES else 0.0
        self.gather_seconds = min(max(at_least, took * GATHER_SHARE), MAX_GATHER_SECONDS)

    def _read_late(self) -> list[tuple[dict, int, bytes]]:
        """The events that reached the stream during a fan-out, read without waiting and
        framed; they are in the next batch too. A gap is left to `_read_stream`."""
        try:
            response = self.redis.xread({relay.STREAM_KEY: f"{self.last_seq}-0"}, count=1000)
        except redis_lib.RedisError:
            return []
        late = []
        for stream_id, fields in response[0][1] if response else ():
            seq = int(stream_id.split(b"-")[0])
            if seq != self.last_seq + 1:
                break
            raw = fields[b"m"].decode()
            message = json.loads(raw)
            self._dispatch(message, raw)
            self.last_seq = seq
            late.append((message, seq, self.framing.send_data(raw, fin=True)))
        return late

    def _catch_up(self, before: int | None = None) -> None:
        """Deliver from PostgreSQL what the stream did not carry: up to `before` (a gap,
        however long, page by page), or, without it (Redis down), the next page."""
        if before is None:
            self.database_read_at = time.monotonic()
            self.published_seq = self.published_seq or self.last_seq  # asked now
            latest = relay.latest_seq(self.ext.database)
            if latest < self.last_seq:
                log.warning("event ids went back (database restored or recreated): following it")
                self.last_seq = self.published_seq = latest
        for page in relay.pages_since(self.ext.database, self.last_seq, before, CATCH_UP_PAGE):
            if self.batch:
                self._fan_out()  # a page at a time
            for message in page:
                self._dispatch(message)
                self.last_seq = int(message["id"])
            if before is None:
                return

    def _read_stream(self) -> None:
        while not self.stopped.is_set():
            # Right after a write, let events gather for a moment (see GATHER_ABOVE_WRITES).
            wait = self.fanned_out_at + self.gather_seconds - time.monotonic()
            if wait > 0:
                self.stopped.wait(wait)
            try:
                response = self.redis.xread(
                    {relay.STREAM_KEY: f"{self.last_seq}-0"},
                    block=None if self.batch else 1000,  # a late event is still to go
                    count=1000,
                )
            except redis_lib.RedisError as exc:
                log.warning("event stream unavailable (%s); reading from the database", exc)
                response = None
                self.notified.clear()
                if not self._database_has_more():  # until a relay numbers events
                    self.notified.wait(REDIS_DOWN_POLL_SECONDS)
                self.published_seq = None  # read PostgreSQL at once
            try:
                if not response:
                    if self._database_has_more():
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
                self._fan_out(pick_up_late=True)
            except Exception:
                log.exception("event fan-out failed; retrying")
                self.batch = []
                self.stopped.wait(1.0)

    def _tick_health(self) -> None:
        while not self.stopped.is_set():
            try:
                with self.lock:
                    targets = list(self.system_subscriptions)
                if not targets:  # nobody to tell: no query, no worker ping
                    self.health = None
                    self.stopped.wait(self.settings.system_event_interval_seconds)
                    continue
                self.health = system_health(self.ext)
                frame = FrameProtocol(client=False, extensions=[]).send_data(
                    json.dumps(self.health), fin=True
                )
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
                query = select(model.status, func.count()).group_by(model.status)
                if model is Agent:  # deregistered agents are records, not members
                    query = query.where(Agent.deregistered_at.is_(None))
                rows = db.execute(query)
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
