from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base

LOG_STREAMS = ("stdout", "stderr", "system")


class TaskLogState(Base):
    """Per task with a log: how much it holds. A row of its own, so appending a log never
    touches (or waits on) the task row that assignment, the lifecycle and the sweeps lock."""

    __tablename__ = "task_log_state"
    __table_args__ = (
        # Logs the retention prune has not removed yet.
        Index("ix_task_log_state_unpruned", "task_id", postgresql_where="pruned_at IS NULL"),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # UTF-8 bytes of the stored lines' text (the truncation marker not counted).
    bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    pruned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskLogLine(Base):
    """One line of a task's log, numbered from 1 per task. No foreign key (a check per
    inserted row would slow ingestion): lines are written only under their task's
    TaskLogState row, and the retention prune deletes them (tasks are never deleted)."""

    __tablename__ = "task_logs"
    __table_args__ = (CheckConstraint("stream IN ('stdout', 'stderr', 'system')", name="stream"),)

    task_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stream: Mapped[str] = mapped_column(String(6))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
