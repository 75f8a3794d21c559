"""Sessions: create, read, list, and the five actions (CONTRACT section 2)."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import Select, func, select, true
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.enums import Priority, SessionStatus, SessionType, TaskStatus
from shared.errors import SessionNotFound
from shared.models import Task, WorkSession
from shared.models.types import utcnow
from shared.pools import DEFAULT_POOL
from shared.services import settle
from shared.services.common import Page
from shared.states import SESSION_ACTIONS, move_session
from shared.unit_of_work import request_job


def create(
    db: Session,
    *,
    title: str,
    type: SessionType = SessionType.CODING,
    priority: Priority = Priority.MEDIUM,
    initial_prompt: str | None = None,
    pool: str = DEFAULT_POOL,
) -> WorkSession:
    work_session = WorkSession(
        id=uuid.uuid4(),
        pool=pool,
        title=title,
        type=type,
        priority=priority,
        initial_prompt=initial_prompt,
        status=SessionStatus.PENDING,
    )
    db.add(work_session)
    events.record(
        db,
        events.SESSION_CREATED,
        session_id=work_session.id,
        status=work_session.status,
        pool=pool,
    )
    return work_session


def get(
    db: Session, *, session_id: uuid.UUID, lock: bool = False, share: bool = False
) -> WorkSession | None:
    """`lock` takes the row for a move; `share` keeps it from moving until the commit
    (task creation: a session cannot finish while a task is being added to it)."""
    query = select(WorkSession).where(WorkSession.id == session_id)
    if lock:
        query = query.with_for_update()
    elif share:
        query = query.with_for_update(read=True)
    return db.scalar(query)


def get_or_raise(
    db: Session, *, session_id: uuid.UUID, lock: bool = False, share: bool = False
) -> WorkSession:
    work_session = get(db, session_id=session_id, lock=lock, share=share)
    if work_session is None:
        raise SessionNotFound(f"Session with ID {session_id} not found")
    return work_session


# A session's task counts by status, one column a status, for the session row beside it.
_STATUS_COUNTS = (
    select(
        *(func.count().filter(Task.status == status).label(status.value) for status in TaskStatus)
    )
    .where(Task.session_id == WorkSession.id)
    .correlate(WorkSession)
    .lateral("status_counts")
)


def _with_progress(query: Select) -> Select:
    return query.add_columns(*_STATUS_COUNTS.c).join(_STATUS_COUNTS, true())


def _session_and_progress(row) -> tuple[WorkSession, dict]:
    work_session, *counts = row[: 1 + len(TaskStatus)]
    by_status = {status.value: count for status, count in zip(TaskStatus, counts, strict=True)}
    return work_session, _progress(by_status)


def get_with_progress(db: Session, *, session_id: uuid.UUID) -> tuple[WorkSession, dict]:
    """The session and its progress, in one query."""
    row = db.execute(
        _with_progress(select(WorkSession).where(WorkSession.id == session_id))
    ).first()
    if row is None:
        raise SessionNotFound(f"Session with ID {session_id} not found")
    return _session_and_progress(row)


def list_with_progress(
    db: Session,
    *,
    status: SessionStatus | None = None,
    pool: str | None = None,
    pools: Collection[str] | None = None,
    page: int = 1,
    page_size: int = 20,
) -> tuple[Page[WorkSession], dict[uuid.UUID, dict]]:
    """A page of sessions, newest first, and their progress, in one query (the total is
    counted by a window over the matching sessions; a page past the end counts apart)."""
    matching = select(WorkSession.id, func.count().over().label("total"))
    if pools is not None:
        matching = matching.where(WorkSession.pool.in_(sorted(pools)))
    if status is not None:
        matching = matching.where(WorkSession.status == status)
    if pool is not None:
        matching = matching.where(WorkSession.pool == pool)
    order = (WorkSession.created_at.desc(), WorkSession.id.desc())
    page_ids = matching.order_by(*order).limit(page_size).offset((page - 1) * page_size).subquery()
    query = _with_progress(
        select(WorkSession).join(page_ids, WorkSession.id == page_ids.c.id)
    ).add_columns(page_ids.c.total)
    rows = db.execute(query.order_by(*order)).all()
    if rows:
        total = rows[0].total
    else:
        total = db.scalar(select(func.count()).select_from(matching.subquery())) or 0
    pairs = [_session_and_progress(row) for row in rows]
    page_ = Page(items=[s for s, _ in pairs], total=total, page=page, page_size=page_size)
    return page_, {s.id: progress for s, progress in pairs}


def progress_of(db: Session, *, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    """Task counts by status for many sessions in one query."""
    counts: dict[uuid.UUID, dict[str, int]] = {
        sid: {status.value: 0 for status in TaskStatus} for sid in session_ids
    }
    if session_ids:
        rows = db.execute(
            select(Task.session_id, Task.status, func.count())
            .where(Task.session_id.in_(session_ids))
            .group_by(Task.session_id, Task.status)
        )
        for session_id, status, count in rows:
            counts[session_id][TaskStatus(status).value] = count
    return {sid: _progress(by_status) for sid, by_status in counts.items()}


def no_progress() -> dict:
    """The progress of a session without tasks (one just created)."""
    return _progress({status.value: 0 for status in TaskStatus})


def _progress(by_status: dict[str, int]) -> dict:
    total = sum(by_status.values())
    completed = by_status[TaskStatus.COMPLETED.value]
    return {
        "total": total,
        "by_status": by_status,
        "percent_complete": round(100.0 * completed / total, 1) if total else 0.0,
    }


def apply_action(db: Session, *, session_id: uuid.UUID, action: str) -> WorkSession:
    """start, pause, resume, cancel or complete. The row lock makes two concurrent
    actions on one session apply one after the other, never both from the same state."""
    work_session = get_or_raise(db, session_id=session_id, lock=True)
    previous = move_session(work_session, action)
    now = utcnow()
    if action == "start":
        work_session.started_at = now
    if action in ("start", "resume"):
        request_job(db, job_names.ASSIGN_READY_TASKS)
    if work_session.status in (SessionStatus.COMPLETED, SessionStatus.CANCELLED):
        work_session.completed_at = now
        settle.settle_session(db, session_id=work_session.id)
    work_session.updated_at = now
    _record_status_change(db, work_session, previous)
    return work_session


def fail(db: Session, *, session_id: uuid.UUID, reason: str) -> WorkSession | None:
    """A task failed for good: the session fails with the reason, its other work stops."""
    work_session = get_or_raise(db, session_id=session_id, lock=True)
    if work_session.status not in SESSION_ACTIONS["fail"][0]:  # finished already
        return work_session
    previous = move_session(work_session, "fail")
    work_session.error = reason
    work_session.completed_at = utcnow()
    settle.settle_session(db, session_id=work_session.id)
    _record_status_change(db, work_session, previous)
    return work_session


def _record_status_change(db: Session, work_session: WorkSession, previous) -> None:
    events.record(
        db,
        events.SESSION_STATUS_CHANGED,
        session_id=work_session.id,
        status=work_session.status,
        previous_status=previous,
    )
