"""Webhook jobs, on their own queue (shared/jobs.py WEBHOOK_QUEUE): one delivery attempt
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
from shared import jobs, webhook_http
from shared.services import webhooks

log = logging.getLogger(__name__)

JOB_OPTIONS = {"acks_late": True, "ignore_result": True}
# A retry due within this long is sent at once with a countdown; later ones by the sweep.
COUNTDOWN_LIMIT_SECONDS = 60.0


@shared_task(name=jobs.DELIVER_WEBHOOK, **JOB_OPTIONS)
def deliver_webhook(delivery_id: str) -> str:
    database = runtime.database()
    with database.transaction() as db:
        attempt = webhooks.claim(db, delivery_id=uuid.UUID(delivery_id))
    if attempt is None:
        return "nothing to do"
    outcome = webhook_http.post(attempt.url, attempt.body, attempt.headers, database.settings)
    with database.transaction() as db:
        recorded = webhooks.record_outcome(db, attempt=attempt, outcome=outcome)
        if recorded is not None and recorded.retry_in is not None:
            soon = recorded.retry_in <= COUNTDOWN_LIMIT_SECONDS
            if soon:
                due = datetime.now(UTC) + timedelta(seconds=recorded.retry_in)
                webhooks.mark_sent(db, delivery_id=attempt.delivery_id, at=due)
    if recorded is None:
        return "superseded"
    if recorded.retry_in is not None and soon:
        deliver_webhook.apply_async((delivery_id,), countdown=recorded.retry_in)
    if recorded.disabled_webhook is not None:
        log.warning("webhook %s disabled after consecutive failures", recorded.disabled_webhook)
    log.info(
        "webhook delivery %s attempt %d: %s",
        delivery_id,
        attempt.attempt,
        outcome.status_code or outcome.error,
        extra={"delivery_id": delivery_id, "status": recorded.status},
    )
    return recorded.status


@shared_task(name=jobs.SWEEP_WEBHOOK_DELIVERIES, **JOB_OPTIONS)
def sweep_webhook_deliveries() -> int:
    """Sends a job for each delivery that is due and that no job holds: retries whose
    time has come, and deliveries whose job was lost (Redis, a SIGKILLed worker)."""
    with runtime.database().transaction() as db:
        due = webhooks.due_deliveries(db)
    for delivery_id in due:
        deliver_webhook.delay(str(delivery_id))
    return len(due)
