"""Tasks: creation with dependencies, and reading them (CONTRACT section 4). What happens
to a task afterwards, and the cascades that follow, are in task_lifecycle.py.

Lock order, everywhere: a task before its parent, tasks before their session, tasks
before agents, so concurrent requests and jobs wait for each other instead of
deadlocking. (A session's finishing move locks the session first, and so takes its
tasks only with SKIP LOCKED: shared/services/settle.py.)
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import events, jobs
from shared.enums import (
    FINISHED_SESSION_STATUSES,
    FINISHED_TASK_STATUSES,
    HELD_TASK_STATUSES,
    Capability,
    Complexity,
    TaskStatus,
)
from shared.errors import Conflict, InvalidTransition, TaskNotFound, ValidationError
from shared.models import OutboxEvent, Task, TaskDependency, WorkSession
from shared.services import sessions as session_service
from shared.services import task_lifecycle
from shared.services.common import Page, paginate, settings_of
from shared.unit_of_work import request_job

DEFAULT_CAPABILITIES = [Capability.CODE_GENERATION.value]


def create(
    db: Session,
    *,
    session_id: uuid.UUID,
    title: str,
    description: str | None = None,
    complexity: Complexity = Complexity.MEDIUM,
    required_capabilities: list[Capability] | None = None,
    depends_on: list[uuid.UUID] | None = None,
    parent_id: uuid.UUID | None = None,
    timeout_seconds: int | None = None,
    template_step: str | None = None,
) -> Task:
    depends_on = list(depends_on or [])
    if depends_on or parent_id:
        # An unknown session is a 404 before anything is said of the other ids.
        session_service.get_or_raise(db, session_id=session_id)
    if len(set(depends_on)) != len(depends_on):
        raise ValidationError("Invalid input", details={"depends_on": ["Contains repeats."]})
    # Tasks before their session (the lock order of this module): the dependencies can't
    # move, the parent is ours, then the session can't finish until this commits. A
    # cancel or completion that got there first is seen here; one that comes after sees
    # this task and cancels it with the rest.
    dependencies = _lock_dependencies(db, depends_on)
    parent = _lock_parent(db, parent_id=parent_id, session_id=session_id) if parent_id else None
    _check_dependencies(db, depends_on, dependencies, session_id=session_id, parent=parent)
    work_session = session_service.get_or_raise(db, session_id=session_id, share=True)
    if work_session.status in FINISHED_SESSION_STATUSES:
        raise InvalidTransition(f"Cannot add a task to a session that is {work_session.status}")
    waiting = any(d.status != TaskStatus.COMPLETED for d in dependencies.values())
    task = Task(
        id=uuid.uuid4(),
        session_id=session_id,
        parent_id=parent_id,
        title=title,
        description=description,
        complexity=complexity,
        status=TaskStatus.BLOCKED if waiting else TaskStatus.PENDING,
        required_capabilities=[
            Capability(c).value for c in (required_capabilities or DEFAULT_CAPABILITIES)
        ],
        attempts=0,
        progress=0,
        timeout_seconds=timeout_seconds or settings_of(db).task_timeout_seconds,
        template_step=template_step,
    )
    db.add(task)
    db.flush()  # the dependency rows reference the new task's id
    if depends_on:
        db.execute(
            TaskDependency.__table__.insert(),
            [{"task_id": task.id, "depends_on_id": d} for d in depends_on],
        )
    events.record(
        db,
        events.TASK_CREATED,
        task_id=task.id,
        session_id=session_id,
        parent_id=parent_id,
        status=task.status,
    )
    if parent is not None:
        parent.has_subtasks = True
        task_lifecycle.follow_subtasks(db, parent)
    if task.status == TaskStatus.PENDING:
        request_job(db, jobs.ASSIGN_READY_TASKS)
    return task


def _lock_parent(db: Session, *, parent_id: uuid.UUID, session_id: uuid.UUID) -> Task:
    parent = get(db, task_id=parent_id, lock=True)
    if parent is None or parent.session_id != session_id:
        raise ValidationError(
            "Invalid input", details={"parent_id": ["No such task in this session."]}
        )
    if parent.status in FINISHED_TASK_STATUSES or parent.status == TaskStatus.BLOCKED:
        raise Conflict(f"Cannot add a subtask to a task that is {parent.status}")
    if parent.status in HELD_TASK_STATUSES and not parent.has_subtasks:
        raise Conflict("Cannot add a subtask to a task an agent holds")
    return parent


def _lock_dependencies(db: Session, depends_on: list[uuid.UUID]) -> dict[uuid.UUID, Task]:
    """Key-share locks, in id order: a dependency can't finish (every finishing move takes
    FOR UPDATE) and miss the new task among its dependents until this transaction
    commits; concurrent creations don't wait, nor does assignment (FOR NO KEY UPDATE),
    which would otherwise skip a dependency being depended on."""
    if not depends_on:
        return {}
    query = select(Task).where(Task.id.in_(depends_on)).order_by(Task.id)
    return {t.id: t for t in db.scalars(query.with_for_update(read=True, key_share=True))}


def _check_dependencies(
    db: Session,
    depends_on: list[uuid.UUID],
    found: dict[uuid.UUID, Task],
    *,
    session_id: uuid.UUID,
    parent: Task | None,
) -> None:
    if not depends_on:
        return
    problems = []
    for dep_id in depends_on:
        dep = found.get(dep_id)
        if dep is None or dep.session_id != session_id:
            problems.append(f"{dep_id} is not a task of this session.")
        elif dep.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            problems.append(f"{dep_id} is {dep.status} and will never complete.")
    # A task whose parent follows its subtasks can't wait for that parent (or any
    # ancestor): that is a cycle through the parent link.
    ancestor = parent
    while ancestor is not None:
        if ancestor.id in found:
            problems.append(f"{ancestor.id} is an ancestor of this task: that is a cycle.")
        ancestor = db.get(Task, ancestor.parent_id) if ancestor.parent_id else None
    if problems:
        raise ValidationError("Invalid dependencies", details={"depends_on": problems})


def get(db: Session, *, task_id: uuid.UUID, lock: bool = False) -> Task | None:
    query = select(Task).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    return db.scalar(query)


def get_or_raise(db: Session, *, task_id: uuid.UUID, lock: bool = False) -> Task:
    task = get(db, task_id=task_id, lock=lock)
    if task is None:
        raise TaskNotFound(f"Task with ID {task_id} not found")
    return task


def list_tasks(
    db: Session,
    *,
    session_id: uuid.UUID | None = None,
    status: TaskStatus | None = None,
    parent_only: bool = False,
    agent_id: uuid.UUID | None = None,
    pool: str | None = None,
    page: int = 1,
    page_size: int = 20,
) -> Page[Task]:
    query = select(Task).order_by(Task.created_at.desc(), Task.id.desc())
    if pool is not None:  # a task's pool is its session's
        query = query.where(
            Task.session_id.in_(select(WorkSession.id).where(WorkSession.pool == pool))
        )
    if session_id is not None:
        query = query.where(Task.session_id == session_id)
    if status is not None:
        query = query.where(Task.status == status)
    if parent_only:
        query = query.where(Task.parent_id.is_(None))
    if agent_id is not None:
        query = query.where(Task.assigned_agent_id == agent_id)
    return paginate(db, query, page=page, page_size=page_size)


def history(db: Session, *, task_id: uuid.UUID, limit: int = 500) -> list[dict]:
    """The task's events still retained (the last EVENT_RETENTION of all), oldest first,
    as the streams send them (the same ids, so a client can merge the two)."""
    from shared.relay import message

    get_or_raise(db, task_id=task_id)
    rows = db.execute(
        select(OutboxEvent.seq, OutboxEvent.type, OutboxEvent.payload, OutboxEvent.created_at)
        .where(OutboxEvent.seq.is_not(None), OutboxEvent.payload["task_id"].astext == str(task_id))
        .order_by(OutboxEvent.seq)
        .limit(limit)
    ).all()
    return [message(*row) for row in rows]


def dependencies_of(db: Session, *, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    result: dict[uuid.UUID, list] = {tid: [] for tid in task_ids}
    if task_ids:
        rows = db.execute(
            select(TaskDependency.task_id, TaskDependency.depends_on_id)
            .where(TaskDependency.task_id.in_(task_ids))
            .order_by(TaskDependency.depends_on_id)
        )
        for task_id, dep_id in rows:
            result[task_id].append(dep_id)
    return result


def subtasks_of(db: Session, *, task_id: uuid.UUID) -> list[uuid.UUID]:
    return subtasks_of_many(db, task_ids=[task_id])[task_id]


def subtasks_of_many(db: Session, *, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    result: dict[uuid.UUID, list] = {tid: [] for tid in task_ids}
    if task_ids:
        rows = db.execute(
            select(Task.parent_id, Task.id)
            .where(Task.parent_id.in_(task_ids))
            .order_by(Task.created_at, Task.id)
        )
        for parent_id, task_id in rows:
            result[parent_id].append(task_id)
    return result
