"""The beat sweeps: the guarantee behind the jobs (ARCHITECTURE principle 2).

Each sweep reads only the rows it must repair, through a partial index, so its cost
follows the amount of work and not the size of the tables; each is idempotent and
skips rows another sweep or request holds (SKIP LOCKED).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import events
from shared.enums import AgentStatus, TaskStatus
from shared.models import Agent, Task
from shared.models.types import utcnow
from shared.services import decomposition, task_lifecycle
from shared.services.common import settings_of
from shared.states import HELD_TASK_STATUSES, agent_statuses_moving_to

log = logging.getLogger(__name__)
BATCH = 1000


def expire_heartbeats(db: Session, *, limit: int = BATCH) -> int:
    """Agents silent for longer than HEARTBEAT_TIMEOUT_SECONDS go OFFLINE; the tasks they
    held go back to PENDING (an attempt counted) and are offered to others."""
    cutoff = utcnow() - timedelta(seconds=settings_of(db).heartbeat_timeout_seconds)
    expired = db.execute(
        select(Agent.id, Agent.status, Agent.current_load)
        .where(
            Agent.status.in_(agent_statuses_moving_to(AgentStatus.OFFLINE)),
            Agent.last_heartbeat_at < cutoff,
        )
        .order_by(Agent.last_heartbeat_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return 0
    ids = [row.id for row in expired]
    db.execute(
        update(Agent)
        .where(Agent.id.in_(ids))
        .values(status=AgentStatus.OFFLINE, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    events.record_many(
        db,
        [
            (
                events.AGENT_STATUS_CHANGED,
                {
                    "agent_id": row.id,
                    "status": AgentStatus.OFFLINE,
                    "previous_status": row.status,
                    "current_load": row.current_load,
                    "reason": "heartbeat expired",
                },
            )
            for row in expired
        ],
    )
    _release_tasks_of(db, ids, reason="agent heartbeat expired")
    return len(expired)


def _release_tasks_of(db: Session, agent_ids: list[uuid.UUID], *, reason: str) -> int:
    held = db.execute(
        select(
            Task.id,
            Task.status,
            Task.attempts,
            Task.parent_id,
            Task.session_id,
            Task.assigned_agent_id,
        )
        .where(Task.assigned_agent_id.in_(agent_ids), Task.status.in_(HELD_TASK_STATUSES))
        .order_by(Task.id)
        .with_for_update(skip_locked=True)
    ).all()
    task_lifecycle.release_many(db, held=held, reason=reason)
    return len(held)


def release_tasks_of_offline_agents(db: Session) -> int:
    """Held tasks whose agent is OFFLINE (the expiry sweep skipped them while locked)."""
    agent_ids = db.scalars(
        select(Task.assigned_agent_id)
        .join(Agent, Agent.id == Task.assigned_agent_id)
        .where(Task.status.in_(HELD_TASK_STATUSES), Agent.status == AgentStatus.OFFLINE)
        .distinct()
        .limit(BATCH)
    ).all()
    return _release_tasks_of(db, list(agent_ids), reason="agent offline") if agent_ids else 0


def time_out_tasks(db: Session, *, limit: int = BATCH) -> int:
    """Held tasks past their deadline fail as retryable: not started within
    TASK_START_TIMEOUT_SECONDS, or no progress within their timeout_seconds."""
    overdue = db.scalars(
        select(Task)
        .where(Task.status.in_(HELD_TASK_STATUSES), Task.deadline_at < utcnow())
        .order_by(Task.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    start_timeout = settings_of(db).task_start_timeout_seconds
    for task in overdue:
        if task.status == TaskStatus.ASSIGNED:
            reason = f"start timeout: not started within {start_timeout} seconds"
        else:
            reason = f"run timeout: no progress within {task.timeout_seconds} seconds"
        task_lifecycle.fail(db, task_id=task.id, error=reason, retryable=True)
    return len(overdue)


def finish_lost_decompositions(db: Session) -> int:
    """Decompositions accepted long ago whose job never ran: done here."""
    task_ids = decomposition.never_run(db)
    for task_id in task_ids:
        decomposition.run(db, task_id=task_id)
    return len(task_ids)
