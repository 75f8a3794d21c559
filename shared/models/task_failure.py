from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.models.types import utcnow


class TaskFailure(Base):
    """One failed attempt of a task, and the agent whose attempt it was: written with the
    `fail` that counted it (retryable or not, the timeout sweep's included). The tasks
    table keeps only the last holder, so a task failed by A and completed by B would
    otherwise forget A's failure."""

    __tablename__ = "task_failures"
    __table_args__ = (Index("ix_task_failures_agent_id", "agent_id"),)

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    # The task's `attempts` once this failure counted: one row per attempt.
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class AgentTaskTotals(Base):
    """Per agent, the tasks it completed and the failures of its attempts, kept by
    database triggers (migration 0010) in the transaction of each change to `tasks` and
    `task_failures`, so no code path can forget them. Read only by the fleet summary
    (`GET /agents/performance`); an agent's own figures are counted from the rows."""

    __tablename__ = "agent_task_totals"
    __table_args__ = (
        CheckConstraint("tasks_completed >= 0", name="tasks_completed"),
        CheckConstraint("tasks_failed >= 0", name="tasks_failed"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    tasks_completed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tasks_failed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
