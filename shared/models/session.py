from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.enums import Priority, SessionStatus, SessionType
from shared.models.types import TimestampMixin, enum_column, new_id
from shared.pools import DEFAULT_POOL


class WorkSession(TimestampMixin, Base):
    """A unit of work ("implement user authentication"). Named to avoid clashing with
    SQLAlchemy's Session."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_created_at", "created_at"),
        Index("ix_sessions_status_created_at", "status", "created_at"),
        Index("ix_sessions_pool_created_at", "pool", "created_at"),
        # GET /sessions/statistics reads these alone (index-only scans), by pool or not.
        Index(
            "ix_sessions_statistics_created_at",
            "created_at",
            postgresql_include=["status", "started_at", "completed_at"],
        ),
        Index(
            "ix_sessions_statistics_pool_created_at",
            "pool",
            "created_at",
            postgresql_include=["status", "started_at", "completed_at"],
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    # The team's pool: its tasks go only to agents of the same pool (shared/pools.py).
    pool: Mapped[str] = mapped_column(String(40), default=DEFAULT_POOL, server_default=DEFAULT_POOL)
    status: Mapped[SessionStatus] = mapped_column(
        enum_column(SessionStatus, "session_status"), default=SessionStatus.PENDING
    )
    type: Mapped[SessionType] = mapped_column(
        enum_column(SessionType, "session_type"), default=SessionType.CODING
    )
    priority: Mapped[Priority] = mapped_column(
        enum_column(Priority, "priority"), default=Priority.MEDIUM
    )
    initial_prompt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
