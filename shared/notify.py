"""PostgreSQL LISTEN/NOTIFY for the event path: what wakes the outbox relays and the hubs.

`orchestrator_outbox` is sent by a trigger on `outbox_events` when a transaction commits
new events (migration 0012): the relays publish at once. `orchestrator_events` is sent by
the relay that numbered events, with the last id as payload, when it commits: the hubs
learn the newest id without asking (they fill a gap from PostgreSQL only when the stream
missed an event, and read PostgreSQL directly only while Redis is down).

One listening connection per process (`listener(url)`), shared by its relay and hub. It
is a direct connection, outside the engine's pool: LISTEN is session state, which a
pooler in transaction mode (PgBouncer) would not keep, so it uses DATABASE_LISTEN_URL
(default DATABASE_URL; point it past the pooler). A notification can be lost only with
the connection; after a reconnect every callback runs once, as if notified, and the
relays and hubs keep a slow safety poll besides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg2
from psycopg2 import extensions

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "orchestrator_outbox"
PUBLISHED_CHANNEL = "orchestrator_events"
RECONNECT_SECONDS = 1.0
# How long one wait for notifications lasts at most (a stop or a new channel ends it at
# once; a dead server makes the socket readable; TCP keepalives find a silent drop).
WAIT_SECONDS = 60.0


class Listener(threading.Thread):
    """LISTENs on its channels over one connection and calls, in its own thread, each
    callback subscribed to a channel with the notification's payload (None after a
    reconnect: something may have been missed). Callbacks must be quick."""

    def __init__(self, url: str) -> None:
        super().__init__(name="pg-listener", daemon=True)
        self.url = url
        self.callbacks: dict[str, list[Callable[[str | None], object]]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.connected = threading.Event()
        self.connection = None
        self.listening: set[str] = set()
        self.started = False
        # Written to when a channel is added or on stop, so the wait ends at once.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)

    def subscribe(self, channel: str, callback: Callable[[str | None], object]) -> None:
        with self.lock:
            self.callbacks.setdefault(channel, []).append(callback)
            first = not self.started
            self.started = True
        os.write(self.wake_write, b"x")
        if first:
            self.start()

    def stop(self) -> None:
        self.stopped.set()
        os.write(self.wake_write, b"x")

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._connect()
                self._notify_all(None)  # whatever happened while not listening
                while not self.stopped.is_set():
                    self._listen_to_new_channels()
                    readable, _, _ = select.select(
                        [self.connection, self.wake_read], [], [], WAIT_SECONDS
                    )
                    if self.wake_read in readable:
                        self._drain_wake_pipe()
                    if self.connection in readable:
                        self.connection.poll()
                        self._dispatch()
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                self._close()
            self.stopped.wait(RECONNECT_SECONDS)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _connect(self) -> None:
        self.connection = psycopg2.connect(
            self.url,
            application_name="orchestrator-listen",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        self.connection.set_isolation_level(extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        self.listening = set()
        self._listen_to_new_channels()
        self.connected.set()

    def _listen_to_new_channels(self) -> None:
        with self.lock:
            channels = set(self.callbacks) - self.listening
        if channels:
            with self.connection.cursor() as cursor:
                for channel in sorted(channels):
                    cursor.execute(f'LISTEN "{channel}"')
            self.listening |= channels

    def _dispatch(self) -> None:
        notifies, self.connection.notifies[:] = list(self.connection.notifies), []
        last_payload: dict[str, str] = {}  # a burst of one channel: its last payload once
        for notify in notifies:
            last_payload[notify.channel] = notify.payload
        for channel, payload in last_payload.items():
            self._call(channel, payload)

    def _notify_all(self, payload: str | None) -> None:
        with self.lock:
            channels = list(self.callbacks)
        for channel in channels:
            self._call(channel, payload)

    def _call(self, channel: str, payload: str | None) -> None:
        with self.lock:
            callbacks = list(self.callbacks.get(channel, ()))
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:
                log.exception("a notification callback failed")

    def _close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None


_listeners: dict[str, Listener] = {}
_listeners_lock = threading.Lock()


def listener(url: str) -> Listener:
    """This process's listener for `url` (one connection however many subscribe)."""
    with _listeners_lock:
        found = _listeners.get(url)
        if found is None or found.stopped.is_set():
            found = _listeners[url] = Listener(url)
        return found


def listen_url(settings) -> str:
    """A libpq URL for the direct connection that LISTENs."""
    from sqlalchemy.engine import make_url

    url = settings.database_listen_url or settings.database_url
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
