from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base
from shared.enums import AgentStatus, AgentType
from shared.models.types import TimestampMixin, enum_column, new_id, utcnow
from shared.pools import DEFAULT_POOL


class Agent(TimestampMixin, Base):
    """A registered coding agent. How many tasks it holds is never stored: it is counted
    from the tasks table, so it cannot drift."""

    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("max_concurrent_tasks BETWEEN 1 AND 100", name="max_concurrent_tasks"),
        CheckConstraint("current_load BETWEEN 0 AND 100", name="current_load"),
        Index("ix_agents_capabilities", "capabilities", postgresql_using="gin"),
        Index("ix_agents_status_created_at", "status", "created_at"),
        Index("ix_agents_created_at", "created_at"),
        Index("ix_agents_pool_created_at", "pool", "created_at"),
        Index(
            "uq_agents_live_name", "name", unique=True, postgresql_where="deregistered_at IS NULL"
        ),
        # The expiry sweep reads only agents past the timeout, through this index.
        Index(
            "ix_agents_online_last_heartbeat_at",
            "last_heartbeat_at",
            postgresql_where="status <> 'OFFLINE'",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # Unique among live agents (uq_agents_live_name): a deregistered agent's name is free.
    name: Mapped[str] = mapped_column(String(100))
    # It takes tasks of its pool's sessions only (shared/pools.py); fixed at registration.
    pool: Mapped[str] = mapped_column(String(40), default=DEFAULT_POOL, server_default=DEFAULT_POOL)
    type: Mapped[AgentType] = mapped_column(enum_column(AgentType, "agent_type"))
    capabilities: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    max_concurrent_tasks: Mapped[int] = mapped_column(Integer, default=5)
    current_load: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[AgentStatus] = mapped_column(
        enum_column(AgentStatus, "agent_status"), default=AgentStatus.IDLE
    )
    last_heartbeat_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    # When its last agent.heartbeat event was recorded (they are coalesced: services/agents.py).
    heartbeat_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by deregistration: the row stays as the record of who did its finished tasks.
    deregistered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
