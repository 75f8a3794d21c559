"""Reading tasks: by id, lists, dependencies, subtasks and history (CONTRACT section 4).
Creation is in task_creation.py; what happens to a task afterwards, and the cascades that
follow, in task_lifecycle.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import ARRAY, Uuid, func, select
from sqlalchemy.orm import Session, aliased

from shared import events
from shared.enums import TaskStatus
from shared.errors import TaskNotFound
from shared.models import OutboxEvent, Task, TaskDependency, WorkSession
from shared.relay import message
from shared.services.common import Page


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
    pools: Collection[str] | None = None,
    page: int = 1,
    page_size: int = 20,
) -> tuple[Page[Task], dict[uuid.UUID, list], dict[uuid.UUID, list]]:
    """A page of tasks, newest first, with the dependencies and the subtasks of each (by
    task id), in one query: the total is counted by a window over the matching tasks (a
    page past the end counts apart). `pools`: only those (a token scoped to pools); None:
    every pool."""
    matching = select(Task.id, func.count().over().label("total"))
    if pools is not None:
        matching = matching.where(
            Task.session_id.in_(select(WorkSession.id).where(WorkSession.pool.in_(sorted(pools))))
        )
    if pool is not None:  # a task's pool is its session's
        matching = matching.where(
            Task.session_id.in_(select(WorkSession.id).where(WorkSession.pool == pool))
        )
    if session_id is not None:
        matching = matching.where(Task.session_id == session_id)
    if status is not None:
        matching = matching.where(Task.status == status)
    if parent_only:
        matching = matching.where(Task.parent_id.is_(None))
    if agent_id is not None:
        matching = matching.where(Task.assigned_agent_id == agent_id)
    order = (Task.created_at.desc(), Task.id.desc())
    page_ids = matching.order_by(*order).limit(page_size).offset((page - 1) * page_size).subquery()
    rows = db.execute(
        select(Task, _DEPENDENCIES, _SUBTASKS, page_ids.c.total)
        .join(page_ids, Task.id == page_ids.c.id)
        .order_by(*order)
    ).all()
    if rows:
        total = rows[0].total
    else:
        total = db.scalar(select(func.count()).select_from(matching.subquery())) or 0
    items = [row[0] for row in rows]
    return (
        Page(items=items, total=total, page=page, page_size=page_size),
        {row[0].id: list(row[1]) for row in rows},
        {row[0].id: list(row[2]) for row in rows},
    )


_child = aliased(Task)
# A task's dependencies and subtasks as arrays, in the orders dependencies_of and
# subtasks_of_many give.
_DEPENDENCIES = func.array(
    select(TaskDependency.depends_on_id)
    .where(TaskDependency.task_id == Task.id)
    .order_by(TaskDependency.depends_on_id)
    .correlate(Task)
    .scalar_subquery(),
    type_=ARRAY(Uuid),
)
_SUBTASKS = func.array(
    select(_child.id)
    .where(_child.parent_id == Task.id)
    .order_by(_child.created_at, _child.id)
    .correlate(Task)
    .scalar_subquery(),
    type_=ARRAY(Uuid),
)


def history(db: Session, *, task_id: uuid.UUID, limit: int = 500) -> list[dict]:
    """The task's events still retained (the last EVENT_RETENTION of all), oldest first,
    as the streams send them (the same ids, so a client can merge the two)."""
    get_or_raise(db, task_id=task_id)
    rows = db.execute(
        select(OutboxEvent.seq, OutboxEvent.type, OutboxEvent.payload, OutboxEvent.created_at)
        .where(OutboxEvent.seq.is_not(None), OutboxEvent.payload["task_id"].astext == str(task_id))
        .where(OutboxEvent.type != events.TASK_LOG)  # the log is read from GET .../logs
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
