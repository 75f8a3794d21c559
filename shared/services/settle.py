"""Settling work that can no longer run (CONTRACT section 4): the unfinished tasks of a
finished session, and tasks waiting on a dependency that failed for good or was cancelled.

A finished session's tasks are cancelled in bounded batches, each its own statement that
skips rows another transaction holds, so no transaction waits on task locks while holding
the session's (and none holds locks for long, whatever the session's size). The request
that finishes a session settles a first batch; a job settles the rest, and the reconcile
sweep settles whatever a lost job or a race left behind.
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.enums import FINISHED_SESSION_STATUSES
from shared.models import Task, WorkSession
from shared.models.types import utcnow
from shared.services import agents as agent_service
from shared.states import HELD_TASK_STATUSES, task_sources, task_target
from shared.unit_of_work import request_job

BATCH = 500
CANCELLABLE = task_sources("cancel")


def reason_for(session_status: str) -> str:
    return f"session {session_status.lower()}"


def cancel_session_tasks(db: Session, *, session_id: uuid.UUID, limit: int = BATCH) -> int:
    """Cancel up to `limit` unfinished tasks of a finished session in one statement
    (rows other transactions hold are left for the next batch); frees their agents.
    Returns how many were cancelled."""
    session_status = db.scalar(select(WorkSession.status).where(WorkSession.id == session_id))
    if session_status not in FINISHED_SESSION_STATUSES:
        return 0
    picked = (
        select(Task.id, Task.status, Task.assigned_agent_id)
        .where(Task.session_id == session_id, Task.status.in_(CANCELLABLE))
        .order_by(Task.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    now = utcnow()
    rows = db.execute(
        update(Task)
        .where(Task.id == picked.c.id)
        .values(
            status=task_target("cancel"),
            error=func.coalesce(Task.error, reason_for(session_status)),
            completed_at=now,
            deadline_at=None,
            updated_at=now,
        )
        .returning(Task.id, picked.c.status, picked.c.assigned_agent_id)
        .execution_options(synchronize_session=False)
    ).all()
    if not rows:
        return 0
    _expire_loaded(db, {task_id for task_id, _, _ in rows})
    events.record_many(
        db,
        [
            (
                events.TASK_STATUS_CHANGED,
                {
                    "task_id": task_id,
                    "session_id": session_id,
                    "status": task_target("cancel"),
                    "previous_status": previous,
                    "agent_id": holder,
                },
            )
            for task_id, previous, holder in rows
        ],
    )
    holders = {holder for _, previous, holder in rows if holder and previous in HELD_TASK_STATUSES}
    agent_service.refresh_statuses(db, agent_ids=holders)
    return len(rows)


def _expire_loaded(db: Session, task_ids: set[uuid.UUID]) -> None:
    """The UPDATE bypassed the identity map: loaded copies of those tasks reload."""
    for obj in list(db.identity_map.values()):
        if isinstance(obj, Task) and obj.id in task_ids:
            db.expire(obj)


def has_unfinished_tasks(db: Session, *, session_id: uuid.UUID) -> bool:
    return bool(
        db.scalar(
            select(exists().where(Task.session_id == session_id, Task.status.in_(CANCELLABLE)))
        )
    )


def settle_session(db: Session, *, session_id: uuid.UUID) -> None:
    """A session has just finished: cancel a first batch of its tasks now, and ask the
    job for the rest."""
    cancel_session_tasks(db, session_id=session_id)
    if has_unfinished_tasks(db, session_id=session_id):
        request_job(db, job_names.SETTLE_SESSION, str(session_id))


def unsettled_sessions(db: Session, *, limit: int = 100) -> list[uuid.UUID]:
    """Finished sessions that still have unfinished tasks (read through the task status
    index: the cost follows the unfinished tasks, not the table)."""
    open_sessions = (
        select(Task.session_id).where(Task.status.in_(CANCELLABLE)).distinct().subquery()
    )
    return list(
        db.scalars(
            select(WorkSession.id)
            .join(open_sessions, open_sessions.c.session_id == WorkSession.id)
            .where(WorkSession.status.in_(sorted(FINISHED_SESSION_STATUSES)))
            .limit(limit)
        )
    )


def settle_finished_sessions(db: Session, *, budget: int = 2 * BATCH) -> int:
    """Sweep: cancel unfinished tasks of finished sessions (a lost job, or a race that
    left one behind), up to `budget` tasks per run."""
    cancelled = 0
    for session_id in unsettled_sessions(db):
        if cancelled >= budget:
            request_job(db, job_names.SETTLE_SESSION, str(session_id))
            continue
        cancelled += cancel_session_tasks(db, session_id=session_id, limit=budget - cancelled)
    return cancelled
