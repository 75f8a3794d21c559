"""The outbox relay: publishes committed events to a Redis Stream, once, in order.

One relay at a time (a PostgreSQL advisory lock) claims unpublished outbox rows, gives
them the next gapless sequence numbers (the public event ids) and commits, then adds them
to the stream with those ids. If the process dies between the commit and the XADD, or
Redis is away, the events are still in PostgreSQL with their ids: readers notice the gap
(ids are gapless) and read the missing events from the database, so nothing is lost and
nothing is delivered twice.

Every web process runs a relay thread, woken by PostgreSQL's NOTIFY when events are
committed (shared/notify.py) and looking once a second besides; a beat job runs the same
`publish_once` now and then as a safety net for a stack without a running web process.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

import redis as redis_lib
from sqlalchemy import text

from shared import job_names, notify
from shared.db import Database
from shared.events import message
from shared.services import webhook_deliveries

log = logging.getLogger(__name__)

STREAM_KEY = "orchestrator:events"
LOCK_KEY = 0x0E7E_0001
BATCH = 1000
# How often a relay looks for unpublished events without being notified (a NOTIFY lost
# with the listening connection, or events inserted with triggers disabled).
SAFETY_POLL_SECONDS = 1.0

_CLAIM_SQL = text(
    """
    WITH next AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM outbox_events WHERE published_at IS NULL ORDER BY id LIMIT :batch
    ), base AS (
        SELECT coalesce(max(seq), 0) AS last FROM outbox_events
    )
    UPDATE outbox_events AS o SET seq = base.last + next.n, published_at = now()
    FROM next, base
    WHERE o.id = next.id
    RETURNING o.seq, o.type, o.payload, o.created_at
    """
)

_SINCE_SQL = text(
    """
    SELECT seq, type, payload, created_at FROM outbox_events
    WHERE seq > :after AND seq < :before ORDER BY seq LIMIT :limit
    """
)


_ANY_UNPUBLISHED_SQL = text(
    "SELECT EXISTS (SELECT 1 FROM outbox_events WHERE published_at IS NULL)"
)
_TAKE_TURN_SQL = text("SELECT pg_try_advisory_xact_lock(:k)")
_TELL_HUBS_SQL = text("SELECT pg_notify(:channel, CAST(:seq AS text))")


def publish_once(database: Database, redis: redis_lib.Redis, *, retention: int) -> int:
    """Publish what is unpublished; returns how many events. 0 if another relay is busy."""
    # Woken by a NOTIFY or by the safety poll: when there is nothing to publish (a
    # partial index answers), one statement in autocommit, no transaction, no lock.
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        if not probe.scalar(_ANY_UNPUBLISHED_SQL):
            return 0
    with database.engine.connect() as turn:
        # One relay at a time, from its claim until its XADD is done (ids must reach the
        # stream in order): a lock of `turn`'s transaction, rolled back at the end. No
        # session state, so a pooler in transaction mode (PgBouncer) may stand between.
        if not turn.scalar(_TAKE_TURN_SQL, {"k": LOCK_KEY}):
            turn.rollback()
            return 0
        try:
            with database.engine.connect() as connection:
                rows = connection.execute(_CLAIM_SQL, {"batch": BATCH}).all()
                deliveries = []
                if rows:
                    # in the transaction that numbers the events: a committed event always
                    # has its webhook deliveries (shared/services/webhook_deliveries.py)
                    seqs = [row.seq for row in rows]
                    deliveries = webhook_deliveries.fan_out(
                        connection, first_seq=min(seqs), last_seq=max(seqs)
                    )
                    # delivered at the commit: hubs learn the newest id without asking
                    connection.execute(
                        _TELL_HUBS_SQL, {"channel": notify.PUBLISHED_CHANNEL, "seq": max(seqs)}
                    )
                connection.commit()
            if rows:
                _add_to_stream(redis, rows, retention=retention)
        finally:
            turn.rollback()
    if deliveries:  # after the lock: the next events need not wait for these sends
        _send_deliveries(database, deliveries)
    return len(rows)


def _send_deliveries(database: Database, delivery_ids: list) -> None:
    """A job per delivery; one that is not sent is sent by the webhook sweep later."""
    if database.job_sender is None:
        return
    for delivery_id in delivery_ids:
        try:
            database.job_sender(job_names.DELIVER_WEBHOOK, (str(delivery_id),), {})
        except Exception as exc:
            log.warning("webhook deliveries not sent (the sweep sends them): %s", exc)
            return


def _add_to_stream(redis: redis_lib.Redis, rows, *, retention: int) -> None:
    try:
        results = _xadd_all(redis, rows, retention)
        if any(_stream_ahead(r) for r in results):
            # The stream holds ids this database never gave (the database was restored or
            # recreated): start the stream again from this database's ids.
            log.warning("the event stream is ahead of the database; starting it again")
            redis.delete(STREAM_KEY)
            results = _xadd_all(redis, rows, retention)
        for result in results:
            if isinstance(result, Exception):
                log.warning("event not added to the stream (readers backfill it): %s", result)
    except redis_lib.RedisError as exc:
        log.warning("redis unavailable, %d events wait in the outbox: %s", len(rows), exc)


def _xadd_all(redis: redis_lib.Redis, rows, retention: int) -> list:
    pipe = redis.pipeline(transaction=False)
    for row in rows:
        body = json.dumps(message(row.seq, row.type, row.payload, row.created_at))
        pipe.xadd(STREAM_KEY, {"m": body}, id=f"{row.seq}-0", maxlen=retention, approximate=True)
    return pipe.execute(raise_on_error=False)


def _stream_ahead(result) -> bool:
    return isinstance(result, redis_lib.ResponseError) and "equal or smaller" in str(result)


def events_since(database: Database, after: int, before: int | None = None, limit: int = 10000):
    """Published events with after < seq < before, oldest first, as messages: at most
    `limit` of them (`pages_since` for all)."""
    with database.engine.connect() as connection:
        rows = connection.execute(
            _SINCE_SQL, {"after": after, "before": before or 2**62, "limit": limit}
        ).all()
    return [message(r.seq, r.type, r.payload, r.created_at) for r in rows]


def pages_since(
    database: Database, after: int, before: int | None = None, page: int = 1000
) -> Iterator[list[dict]]:
    """Every published event with after < seq < before, however many, in pages of at most
    `page` messages, oldest first; each page read when the one before it is consumed (ids
    are gapless, so a missing id between pages was pruned meanwhile)."""
    while True:
        messages = events_since(database, after, before, limit=page)
        if not messages:
            return
        yield messages
        after = int(messages[-1]["id"])
        if len(messages) < page:
            return


def latest_seq(database: Database) -> int:
    with database.engine.connect() as connection:
        return connection.scalar(text("SELECT coalesce(max(seq), 0) FROM outbox_events"))


def prune(database: Database, *, retention: int) -> int:
    """Forget published events older than the newest `retention`."""
    with database.transaction() as db:
        result = db.execute(
            text(
                "DELETE FROM outbox_events WHERE seq IS NOT NULL AND seq <= "
                "(SELECT max(seq) FROM outbox_events) - :keep"
            ),
            {"keep": retention},
        )
        return result.rowcount


class RelayThread(threading.Thread):
    """Publishes unpublished events (one per web process): woken by the outbox's NOTIFY
    (shared/notify.py, when `listener` is given), and every `safety_interval` seconds in
    case a notification was lost; `on_published(n)` is told each batch (the web process
    counts them for /metrics)."""

    def __init__(
        self,
        database: Database,
        redis: redis_lib.Redis,
        *,
        retention: int,
        listener: notify.Listener | None = None,
        safety_interval: float = SAFETY_POLL_SECONDS,
        on_published: Callable[[int], object] | None = None,
    ) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.database = database
        self.redis = redis
        self.retention = retention
        self.safety_interval = safety_interval
        self.on_published = on_published
        self.stopped = threading.Event()
        self.woken = threading.Event()
        if listener is not None:
            listener.subscribe(notify.OUTBOX_CHANNEL, lambda _payload: self.woken.set())

    def run(self) -> None:
        published_since_prune = 0
        while not self.stopped.is_set():
            # cleared before publishing: events committed meanwhile wake the next round
            self.woken.clear()
            try:
                published = publish_once(self.database, self.redis, retention=self.retention)
                if published and self.on_published is not None:
                    self.on_published(published)
                published_since_prune += published
                if published_since_prune > self.retention // 10:
                    prune(self.database, retention=self.retention)
                    published_since_prune = 0
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
                self.stopped.wait(1.0)
            if published < BATCH:
                self.woken.wait(self.safety_interval)

    def stop(self) -> None:
        self.stopped.set()
        self.woken.set()
