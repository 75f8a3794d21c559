from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.enums import Complexity, DecompositionTemplate, TaskStatus
from shared.models.types import TimestampMixin, enum_column, new_id


class Task(TimestampMixin, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("timeout_seconds BETWEEN 1 AND 86400", name="timeout_seconds"),
        # One set of subtasks per parent, whoever decomposes it (the job is idempotent).
        UniqueConstraint("parent_id", "template_step", name="uq_tasks_parent_id_template_step"),
        Index("ix_tasks_session_id_created_at", "session_id", "created_at"),
        Index("ix_tasks_status_created_at", "status", "created_at"),
        Index("ix_tasks_parent_id", "parent_id"),
        Index("ix_tasks_created_at", "created_at"),
        Index(
            "ix_tasks_held_by_agent",
            "assigned_agent_id",
            postgresql_where="status IN ('ASSIGNED', 'IN_PROGRESS')",
        ),
        # An agent's completed tasks, counted for its figures (services/statistics.py).
        Index(
            "ix_tasks_completed_by_agent",
            "assigned_agent_id",
            postgresql_where="status = 'COMPLETED'",
        ),
        # Sweeps read only overdue held tasks, through this index.
        Index(
            "ix_tasks_deadline_at",
            "deadline_at",
            postgresql_where="status IN ('ASSIGNED', 'IN_PROGRESS')",
        ),
        # Decompositions accepted but not yet done, for the reconciliation sweep.
        Index(
            "ix_tasks_decomposition_pending",
            "updated_at",
            postgresql_where="decomposition_template IS NOT NULL AND decomposed_at IS NULL",
        ),
        # Ready work for the assignment job.
        Index(
            "ix_tasks_pending_created_at",
            "created_at",
            postgresql_where=(
                "status = 'PENDING' AND NOT has_subtasks AND decomposition_template IS NULL"
            ),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    complexity: Mapped[Complexity] = mapped_column(
        enum_column(Complexity, "complexity"), default=Complexity.MEDIUM
    )
    status: Mapped[TaskStatus] = mapped_column(
        enum_column(TaskStatus, "task_status"), default=TaskStatus.PENDING
    )
    required_capabilities: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    assigned_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(1000))
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    # Set when a decomposition is accepted; the task is never assigned itself from then on.
    decomposition_template: Mapped[DecompositionTemplate | None] = mapped_column(
        enum_column(DecompositionTemplate, "decomposition_template")
    )
    # A task with subtasks is never assigned itself; its status follows theirs.
    has_subtasks: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    decomposed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The key of this subtask in its parent's template.
    template_step: Mapped[str | None] = mapped_column(String(40))
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a held task is overdue: start timeout while ASSIGNED, run timeout while IN_PROGRESS.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskDependency(Base):
    """`task_id` waits for `depends_on_id` to complete."""

    __tablename__ = "task_dependencies"
    __table_args__ = (
        CheckConstraint("task_id <> depends_on_id", name="not_self"),
        Index("ix_task_dependencies_depends_on_id", "depends_on_id"),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
