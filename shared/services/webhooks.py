"""Webhooks: registration, the delivery log, the test event. Deliveries themselves are
services/webhook_deliveries.py."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import events, webhook_http
from shared.errors import InvalidTransition, ValidationError, WebhookNotFound
from shared.models.webhook import Webhook, WebhookDelivery
from shared.services.common import Page, paginate, settings_of

MIN_SECRET_LENGTH = 16


def create(
    db: Session,
    *,
    url: str,
    event_types: list[str],
    pool: str | None = None,
    secret: str | None = None,
) -> Webhook:
    settings = settings_of(db)
    try:
        webhook_http.check_url(url, settings)
    except webhook_http.AddressRefused as exc:
        raise ValidationError("Invalid input", details={"url": [str(exc)]}) from None
    unknown = [
        t for t in event_types if t not in events.WEBHOOK_EVENT_TYPES + events.WEBHOOK_WILDCARDS
    ]
    if unknown:
        known = ", ".join(events.WEBHOOK_EVENT_TYPES + events.WEBHOOK_WILDCARDS)
        raise ValidationError(
            "Invalid input",
            details={
                "event_types": [f"Unknown event types: {', '.join(unknown)}. Known: {known}."]
            },
        )
    webhook = Webhook(
        url=url,
        event_types=list(dict.fromkeys(event_types)),
        pool=pool,
        secret=secret or "whsec_" + secrets.token_urlsafe(32),
    )
    db.add(webhook)
    db.flush()  # the id and timestamps for the answer
    return webhook


def get_or_raise(db: Session, *, webhook_id: uuid.UUID) -> Webhook:
    webhook = db.get(Webhook, webhook_id)
    if webhook is None:
        raise WebhookNotFound(f"Webhook with ID {webhook_id} not found")
    return webhook


def list_webhooks(
    db: Session, *, page: int, page_size: int, pools: Collection[str] | None = None
) -> Page[Webhook]:
    """`pools`: only the webhooks of those pools (a token scoped to pools: a webhook
    without a pool hears every pool, so it is not among them); None: all."""
    query = select(Webhook).order_by(Webhook.created_at.desc(), Webhook.id)
    if pools is not None:
        query = query.where(Webhook.pool.in_(sorted(pools)))
    return paginate(db, query, page=page, page_size=page_size)


def delete(db: Session, *, webhook_id: uuid.UUID) -> None:
    """The webhook and its delivery log; a job sending one of them records nothing."""
    db.delete(get_or_raise(db, webhook_id=webhook_id))


def list_deliveries(
    db: Session, *, webhook_id: uuid.UUID, page: int, page_size: int, status: str | None = None
) -> Page[WebhookDelivery]:
    get_or_raise(db, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.event_id.desc())
    return paginate(db, query, page=page, page_size=page_size)


def send_test(db: Session, *, webhook_id: uuid.UUID) -> None:
    """A `webhook.test` event through the outbox: the relay makes its delivery (to this
    webhook only, whatever its event types), so it takes the path every event takes."""
    webhook = get_or_raise(db, webhook_id=webhook_id)
    if not webhook.enabled:
        raise InvalidTransition(
            f"Webhook {webhook_id} is disabled (register its URL again to receive events)"
        )
    payload = {"webhook_id": str(webhook.id)}
    if webhook.pool is not None:
        payload["pool"] = webhook.pool
    events.record(db, events.WEBHOOK_TEST, **payload)
