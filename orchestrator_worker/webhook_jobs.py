"""Webhook jobs, on their own queue (shared/job_names.py WEBHOOK_QUEUE): one delivery attempt
per job, and the sweep that re-sends what is due and held by no job.

A delivery job holds no transaction while it waits on the receiver: it claims the
delivery (a lease, one short transaction), sends, then records the outcome (another).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from celery import shared_task

from orchestrator_worker import runtime
from shared import job_names, webhook_http
from shared.services import webhook_deliveries as deliveries

log = logging.getLogger(__name__)

# A retry due within this long is sent at once with a countdown; later ones by the sweep.
COUNTDOWN_LIMIT_SECONDS = 60.0
# Deliveries one job makes at most, going on with its webhook's backlog.
CHAIN_LIMIT = 100


@shared_task(name=job_names.DELIVER_WEBHOOK)
def deliver_webhook(delivery_id: str) -> int:
    """Deliver one, then go on with the same webhook's due deliveries while they succeed
    (those its claim left for the webhook's jobs in flight, WEBHOOK_MAX_IN_FLIGHT);
    returns how many attempts it made."""
    next_id: uuid.UUID | None = uuid.UUID(delivery_id)
    attempts = 0
    while next_id is not None and attempts < CHAIN_LIMIT:
        next_id = _attempt(next_id)
        attempts += 1
    if next_id is not None:  # a long backlog: a fresh job goes on with it
        deliver_webhook.delay(str(next_id))
    return attempts


def _attempt(delivery_id: uuid.UUID) -> uuid.UUID | None:
    """One attempt; the webhook's next due delivery if it succeeded."""
    database = runtime.database()
    with database.transaction() as db:
        attempt = deliveries.claim(db, delivery_id=delivery_id)
    if attempt is None:
        return None
    outcome = webhook_http.post(attempt.url, attempt.body, attempt.headers, database.settings)
    retry_soon = next_id = None
    with database.transaction() as db:
        recorded = deliveries.record_outcome(db, attempt=attempt, outcome=outcome)
        retry_in = recorded.retry_in if recorded is not None else None
        if retry_in is not None and retry_in <= COUNTDOWN_LIMIT_SECONDS:
            retry_soon = retry_in
            due = datetime.now(UTC) + timedelta(seconds=retry_soon)
            deliveries.mark_sent(db, delivery_id=delivery_id, at=due)
        if recorded is not None and recorded.status == deliveries.SUCCEEDED:
            next_id = deliveries.next_due(db, webhook_id=attempt.webhook_id)
    if retry_soon is not None:
        deliver_webhook.apply_async((str(delivery_id),), countdown=retry_soon)
    if recorded is not None and recorded.disabled_webhook is not None:
        log.warning("webhook %s disabled after consecutive failures", recorded.disabled_webhook)
    log.info(
        "webhook delivery %s attempt %d: %s",
        delivery_id,
        attempt.attempt,
        outcome.status_code or outcome.error,
        extra={
            "delivery_id": str(delivery_id),
            "status": recorded.status if recorded else "superseded",
        },
    )
    return next_id


@shared_task(name=job_names.SWEEP_WEBHOOK_DELIVERIES)
def sweep_webhook_deliveries() -> int:
    """Sends a job for each delivery that is due and that no job holds: retries whose
    time has come, and deliveries whose job was lost (Redis, a SIGKILLed worker); and
    forgets finished deliveries past WEBHOOK_DELIVERY_RETENTION_SECONDS."""
    with runtime.database().transaction() as db:
        due = deliveries.due_deliveries(db)
        deliveries.prune(db)
    for delivery_id in due:
        deliver_webhook.delay(str(delivery_id))
    return len(due)
