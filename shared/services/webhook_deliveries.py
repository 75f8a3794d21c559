"""Webhook deliveries: the fan-out of numbered events to deliveries (in the relay's
transaction), and the bookkeeping of each attempt (the HTTP itself is
shared/webhook_http.py, sent by orchestrator_worker/webhook_jobs.py).

A delivery goes PENDING -> SUCCEEDED, or FAILED (a 4xx other than 429, a 3xx, a refused
address, the retry window spent, or its webhook disabled). A job claims a due delivery
with a lease (so two jobs never send it at once), sends it without holding a
transaction, then records the outcome fenced by the attempt number it claimed (a late job
whose lease ran out records nothing).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared import events, webhook_http
from shared.config import Settings
from shared.models.webhook import Webhook, WebhookDelivery
from shared.services.common import settings_of

PENDING, SUCCEEDED, FAILED = "PENDING", "SUCCEEDED", "FAILED"


# -- the fan-out, in the relay's transaction ---------------------------------------------

_FAN_OUT_SQL = text(
    """
    INSERT INTO webhook_deliveries
        (id, webhook_id, event_id, event_type, payload, event_created_at, next_attempt_at,
         sent_at, created_at)
    SELECT gen_random_uuid(), w.id, e.seq, e.type, e.payload, e.created_at, now(), now(), now()
    FROM outbox_events AS e JOIN webhooks AS w ON w.enabled
    WHERE e.seq BETWEEN :first AND :last AND (
        (e.type = 'webhook.test' AND e.payload->>'webhook_id' = w.id::text)
        OR (e.type <> 'webhook.test'
            AND (e.type = ANY(w.event_types) OR '*' = ANY(w.event_types)
                 OR split_part(e.type, '.', 1) || '.*' = ANY(w.event_types))
            AND (w.pool IS NULL OR e.payload->>'pool' = w.pool)))
    RETURNING id
    """
)
_ANY_ENABLED_SQL = text("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled)")


def fan_out(connection: Connection, *, first_seq: int, last_seq: int) -> list[uuid.UUID]:
    """One delivery per (event, enabled webhook that wants it) for the events just given
    ids first_seq..last_seq, in the caller's (the relay's) transaction."""
    if not connection.scalar(_ANY_ENABLED_SQL):
        return []
    rows = connection.execute(_FAN_OUT_SQL, {"first": first_seq, "last": last_seq})
    return [row.id for row in rows]


# -- attempts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    attempt: int
    url: str
    body: bytes
    headers: dict[str, str]


def event_body(event_id: int, event_type: str, payload: dict, created_at: datetime) -> bytes:
    """The same bytes at every attempt: the event as the WebSocket streams carry it."""
    event = events.message(event_id, event_type, payload, created_at)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def lease_seconds(settings: Settings) -> float:
    return 2 * settings.webhook_timeout_seconds + 5


_CLAIM_TURN_SQL = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(webhook_id::text, 9)) "
    "FROM webhook_deliveries WHERE id = :id"
)
_CLAIM_SQL = text(
    """
    UPDATE webhook_deliveries AS d
    SET attempts = d.attempts + 1, lease_until = now() + make_interval(secs => :lease)
    FROM webhooks AS w
    WHERE d.id = :id AND w.id = d.webhook_id AND d.status = 'PENDING'
      AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
      AND (SELECT count(*) FROM webhook_deliveries AS f
           WHERE f.webhook_id = d.webhook_id AND f.lease_until > now()) < :cap
    RETURNING d.attempts, d.event_id, d.event_type, d.payload, d.event_created_at,
              w.id AS webhook_id, w.url, w.secret, w.enabled
    """
)


def claim(db: Session, *, delivery_id: uuid.UUID, now: float | None = None) -> Attempt | None:
    """Take a due, pending delivery that no other job holds, for one attempt (one
    statement); None if there is nothing to do (done, not due, held, its webhook
    disabled) or if its webhook has WEBHOOK_MAX_IN_FLIGHT deliveries in flight already:
    then one of those jobs goes on with it (`next_due`), so a slow receiver holds only
    that many threads of the webhooks worker."""
    settings = settings_of(db)
    _without_waiting_for_the_disk(db)
    values = {
        "id": delivery_id,
        "lease": lease_seconds(settings),
        "cap": settings.webhook_max_in_flight,
    }
    # Claims of one webhook's deliveries take turns (a lock for this transaction), so
    # each counts the leases of the claims before it: the cap holds exactly.
    db.execute(_CLAIM_TURN_SQL, {"id": delivery_id})
    row = db.execute(_CLAIM_SQL, values).first()
    if row is None:
        return None
    if not row.enabled:
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status=FAILED, lease_until=None, last_error="the webhook is disabled")
        )
        return None
    body = event_body(row.event_id, row.event_type, row.payload, row.event_created_at)
    timestamp = int(now if now is not None else datetime.now(UTC).timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": webhook_http.USER_AGENT,
        webhook_http.EVENT_ID_HEADER: str(row.event_id),
        "X-Orchestrator-Event-Type": row.event_type,
        "X-Orchestrator-Delivery-Id": str(delivery_id),
        "X-Orchestrator-Webhook-Id": str(row.webhook_id),
        "X-Orchestrator-Attempt": str(row.attempts),
        webhook_http.SIGNATURE_HEADER: webhook_http.sign(row.secret, timestamp, body),
    }
    return Attempt(delivery_id, row.webhook_id, row.attempts, row.url, body, headers)


@dataclass(frozen=True)
class Recorded:
    status: str  # the delivery's, after this attempt
    retry_in: float | None  # seconds until the next attempt, when there is one
    disabled_webhook: uuid.UUID | None = None


def backoff(settings: Settings, attempt: int, rng: random.Random | None = None) -> float:
    """base x 2^(attempt-1), at most max_delay, with "equal jitter": between half and all
    of it, so receivers that failed together are not retried together."""
    ceiling = min(
        settings.webhook_retry_max_delay_seconds,
        settings.webhook_retry_base_seconds * 2 ** min(attempt - 1, 40),
    )
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# A success, in one statement: the delivery (if still this attempt's) and the webhook's
# failure count back to 0 (written only when it is not 0 already).
_SUCCEEDED_SQL = text(
    """
    WITH done AS (
        UPDATE webhook_deliveries
        SET status = 'SUCCEEDED', lease_until = NULL, last_status_code = :code,
            last_duration_ms = :ms, last_error = NULL, last_attempt_at = now()
        WHERE id = :id AND attempts = :attempt AND status = 'PENDING'
        RETURNING webhook_id
    ), reset AS (
        UPDATE webhooks SET consecutive_failures = 0 FROM done
        WHERE webhooks.id = done.webhook_id AND webhooks.consecutive_failures <> 0
        RETURNING 1
    )
    SELECT count(*) FROM done
    """
)


def record_outcome(
    db: Session, *, attempt: Attempt, outcome: webhook_http.Outcome
) -> Recorded | None:
    """Write what the attempt got; None if the delivery is no longer this attempt's (its
    lease ran out and another job took it, or the webhook was deleted)."""
    settings = settings_of(db)
    _without_waiting_for_the_disk(db)
    if outcome.succeeded:
        recorded = db.execute(
            _SUCCEEDED_SQL,
            {
                "id": attempt.delivery_id,
                "attempt": attempt.attempt,
                "code": outcome.status_code,
                "ms": outcome.duration_ms,
            },
        ).scalar_one()
        return Recorded(SUCCEEDED, None) if recorded else None
    delivery = db.execute(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == attempt.delivery_id,
            WebhookDelivery.attempts == attempt.attempt,
            WebhookDelivery.status == PENDING,
        )
        .with_for_update()
    ).scalar_one_or_none()
    if delivery is None:
        return None
    delivery.last_status_code = outcome.status_code
    delivery.last_duration_ms = outcome.duration_ms
    delivery.last_error = outcome.error
    delivery.last_attempt_at = datetime.now(UTC)
    webhook_id = delivery.webhook_id
    retry_in = None
    if outcome.retryable:
        retry_in = backoff(settings, attempt.attempt)
        if outcome.retry_after is not None:
            retry_in = min(
                max(retry_in, outcome.retry_after), settings.webhook_retry_max_delay_seconds
            )
        window_ends = delivery.created_at + timedelta(seconds=settings.webhook_retry_window_seconds)
        if datetime.now(UTC) + timedelta(seconds=retry_in) > window_ends:
            retry_in = None
            delivery.last_error = (
                f"{outcome.error} (gave up: the retry window of "
                f"{settings.webhook_retry_window_seconds:g} s is spent)"
            )
    if retry_in is None:
        _finish(delivery, FAILED)
    else:
        delivery.next_attempt_at = datetime.now(UTC) + timedelta(seconds=retry_in)
        delivery.lease_until = None
    disabled = _count_failure(db, webhook_id, settings)
    return Recorded(delivery.status, retry_in, disabled)


_NEXT_DUE_SQL = text(
    """
    SELECT id FROM webhook_deliveries
    WHERE webhook_id = :webhook_id AND status = 'PENDING' AND next_attempt_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_attempt_at LIMIT 1
    """
)


def next_due(db: Session, *, webhook_id: uuid.UUID) -> uuid.UUID | None:
    """The webhook's next delivery that is due and held by no job: the one a job that
    has just delivered goes on with."""
    return db.scalar(_NEXT_DUE_SQL, {"webhook_id": webhook_id})


def _without_waiting_for_the_disk(db: Session) -> None:
    """The bookkeeping of an attempt commits without waiting for the WAL flush (half the
    time of a delivery's two transactions). A database crash can then forget the last
    moment's claims and outcomes, which only means a delivery is sent again: deliveries
    are at least once anyway. The deliveries themselves are written by the relay's
    transaction, which waits as usual."""
    db.execute(text("SET LOCAL synchronous_commit = off"))


def mark_sent(db: Session, *, delivery_id: uuid.UUID, at: datetime) -> None:
    db.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(sent_at=at))


def _finish(delivery: WebhookDelivery, status: str, error: str | None = None) -> None:
    delivery.status = status
    delivery.lease_until = None
    if error is not None:
        delivery.last_error = error


def _count_failure(db: Session, webhook_id: uuid.UUID, settings: Settings) -> uuid.UUID | None:
    """One more failed attempt in a row; at the limit the webhook is disabled (its pending
    deliveries fail) and `webhook.disabled` is recorded. Returns its id if it was."""
    row = db.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id)
        .values(consecutive_failures=Webhook.consecutive_failures + 1)
        .returning(Webhook.consecutive_failures, Webhook.enabled)
    ).first()
    if (
        row is None
        or not row.enabled
        or row.consecutive_failures < settings.webhook_disable_after_failures
    ):
        return None
    webhook = db.get(Webhook, webhook_id)
    webhook.enabled = False
    webhook.disabled_at = datetime.now(UTC)
    db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == PENDING)
        .values(status=FAILED, lease_until=None, last_error="the webhook is disabled")
        .execution_options(synchronize_session=False)
    )
    payload = {
        "webhook_id": str(webhook.id),
        "url": webhook.url,
        "consecutive_failures": row.consecutive_failures,
        "reason": f"{row.consecutive_failures} consecutive failed delivery attempts",
    }
    if webhook.pool is not None:
        payload["pool"] = webhook.pool
    events.record(db, events.WEBHOOK_DISABLED, **payload)
    return webhook.id


# -- the sweep --------------------------------------------------------------------------

_DUE_SQL = text(
    """
    UPDATE webhook_deliveries SET sent_at = now()
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE status = 'PENDING' AND next_attempt_at <= now()
          AND (lease_until IS NULL OR lease_until < now())
          AND (sent_at IS NULL OR sent_at < next_attempt_at
               OR sent_at < now() - make_interval(secs => :grace))
        ORDER BY next_attempt_at LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def due_deliveries(db: Session, *, limit: int = 1000) -> list[uuid.UUID]:
    """Deliveries that are due and that no job holds or was recently sent for (a retry
    whose time has come, a job lost with Redis or a SIGKILLed worker); marked sent."""
    grace = settings_of(db).webhook_redispatch_seconds
    return [row.id for row in db.execute(_DUE_SQL, {"grace": grace, "limit": limit})]


_PRUNE_SQL = text(
    """
    DELETE FROM webhook_deliveries WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE status <> 'PENDING' AND created_at < now() - make_interval(secs => :keep)
        ORDER BY created_at LIMIT :limit)
    """
)


def prune(db: Session, *, limit: int = 5000) -> int:
    """Forget finished deliveries older than WEBHOOK_DELIVERY_RETENTION_SECONDS, at most
    `limit` (the sweep runs every SWEEP_INTERVAL_SECONDS, 5 by default: 1,000 a second)."""
    keep = settings_of(db).webhook_delivery_retention_seconds
    return db.execute(_PRUNE_SQL, {"keep": keep, "limit": limit}).rowcount
