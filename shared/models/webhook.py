from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.models.types import TimestampMixin, new_id, utcnow


class Webhook(TimestampMixin, Base):
    """A receiver of events over HTTP (docs/API.md, "Webhooks")."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    # The contract's event types, `<prefix>.*` or `*` (shared/events.py WEBHOOK_EVENT_TYPES).
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    pool: Mapped[str | None] = mapped_column(String(40))
    # Kept as given: every delivery is signed with it (HMAC needs the secret itself). The
    # API shows it once, in the answer that created the webhook.
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    # Failed attempts since the last success, any delivery: at
    # WEBHOOK_DISABLE_AFTER_FAILURES the webhook is disabled (webhook.disabled).
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for one webhook: written by the relay in the transaction that gives the
    event its id, so none is lost; sent by `orchestrator.deliver_webhook` jobs, at least
    once. Carries its own copy of the event (the outbox is pruned)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'SUCCEEDED', 'FAILED')", name="status"),
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
        # The sweep reads only pending deliveries that are due, through this index.
        Index(
            "ix_webhook_deliveries_pending_next_attempt_at",
            "next_attempt_at",
            postgresql_where="status = 'PENDING'",
        ),
        # A webhook's next due delivery (`next_due`).
        Index(
            "ix_webhook_deliveries_pending_webhook_id_next_attempt_at",
            "webhook_id",
            "next_attempt_at",
            postgresql_where="status = 'PENDING'",
        ),
        # The prune reads only finished deliveries, oldest first.
        Index(
            "ix_webhook_deliveries_finished_created_at",
            "created_at",
            postgresql_where="status <> 'PENDING'",
        ),
        # A webhook's deliveries in flight (the claim's WEBHOOK_MAX_IN_FLIGHT).
        Index(
            "ix_webhook_deliveries_leased_webhook_id",
            "webhook_id",
            postgresql_where="lease_until IS NOT NULL",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    event_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="PENDING", server_default="PENDING")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    # When a job was last sent for it: the sweep sends another only WEBHOOK_REDISPATCH_SECONDS
    # after that, so a backlog in the queue is not sent twice.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by the job that is sending it (a lease): no other job sends it until then.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
