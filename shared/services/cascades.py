"""Moves of one entity that carry work of another with them, above the services they
combine (so that none of those imports another's caller): an agent deregistering hands
its tasks back. (A finished session's tasks are settled by settle.py, below sessions.)
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.enums import AgentStatus
from shared.models import Task
from shared.models.types import utcnow
from shared.services import agents, task_lifecycle
from shared.states import HELD_TASK_STATUSES, move_agent
from shared.unit_of_work import request_job


def deregister_agent(db: Session, *, agent_id: uuid.UUID) -> None:
    """Its held tasks go back to PENDING (an attempt counted); the agent stays as a
    record (OFFLINE, `deregistered_at` set), its name free for a new registration."""
    held = db.scalars(
        select(Task.id)
        .where(Task.assigned_agent_id == agent_id, Task.status.in_(HELD_TASK_STATUSES))
        .order_by(Task.id)
        .with_for_update()
    ).all()
    agent = agents.get_live_or_raise(db, agent_id=agent_id, lock=True)
    for task_id in held:
        task_lifecycle.release(
            db, task_id=task_id, reason=f"agent {agent.name} deregistered", refresh_agent=False
        )
    move_agent(agent, AgentStatus.OFFLINE)
    agent.deregistered_at = agent.updated_at = utcnow()
    events.record(
        db,
        events.AGENT_DEREGISTERED,
        agent_id=agent_id,
        status=AgentStatus.OFFLINE,
        current_load=agent.current_load,
    )
    request_job(db, job_names.ASSIGN_READY_TASKS)
