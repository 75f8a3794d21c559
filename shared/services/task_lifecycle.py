"""The task lifecycle (CONTRACT section 4): start, progress, complete, fail, release,
cancel, and the cascades that follow a task finishing (dependents released or cancelled,
a parent following its subtasks, the session failing with a task).

Lock order, everywhere: a task before its parent, tasks before their session, tasks
before agents, so concurrent requests and jobs wait for each other instead of
deadlocking (tasks.py).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, aliased

from shared import events, job_names
from shared.enums import TaskStatus
from shared.errors import Forbidden, InvalidTransition
from shared.models import Task, TaskDependency
from shared.models.types import utcnow
from shared.services import agents as agent_service
from shared.services import sessions as session_service
from shared.services import statistics, tasks
from shared.services.common import settings_of
from shared.states import (
    FINISHED_TASK_STATUSES,
    HELD_TASK_STATUSES,
    follow_action,
    move_task,
    task_action,
    task_sources,
    task_target,
)
from shared.unit_of_work import request_job

# What a task taken back from its agent no longer has (retry, release, expiry).
TAKEN_BACK = {
    "assigned_agent_id": None,
    "assigned_at": None,
    "started_at": None,
    "deadline_at": None,
    "progress": 0,
}


# Tasks waiting for their dependencies.
WAITING = task_sources("release")
# A dependency in one of these will never complete.
NEVER_COMPLETING = sorted(FINISHED_TASK_STATUSES - {TaskStatus.COMPLETED})


def retry_or_fail(*, attempts: int, retryable: bool, max_attempts: int) -> str:
    """The action for a held task whose attempt ended without success (`attempts`
    counts that attempt): offered again while attempts are left, else failed for good."""
    return "retry" if retryable and attempts < max_attempts else "fail"


def _check_actor(task: Task, agent_id: uuid.UUID | None) -> None:
    if agent_id is not None and task.assigned_agent_id != agent_id:
        raise Forbidden(f"Task {task.id} is not assigned to agent {agent_id}")


def start(db: Session, *, task_id: uuid.UUID, agent_id: uuid.UUID | None = None) -> Task:
    task = tasks.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "start")
    _check_actor(task, agent_id)
    previous = move_task(task, "start")
    now = utcnow()
    task.started_at = now
    task.deadline_at = now + timedelta(seconds=task.timeout_seconds)
    _record_status(db, task, previous)
    if task.parent_id:
        follow_subtasks(db, tasks.get(db, task_id=task.parent_id, lock=True))
    return task


def report_progress(
    db: Session,
    *,
    task_id: uuid.UUID,
    progress: int,
    message: str | None = None,
    agent_id: uuid.UUID | None = None,
) -> Task:
    """An agent says it is still working: the run deadline moves on."""
    task = tasks.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "report progress on")
    _check_actor(task, agent_id)
    task.progress = progress
    task.progress_message = message
    task.deadline_at = utcnow() + timedelta(seconds=task.timeout_seconds)
    return task


def complete(
    db: Session,
    *,
    task_id: uuid.UUID,
    result: dict[str, Any] | None = None,
    agent_id: uuid.UUID | None = None,
) -> Task:
    task = tasks.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "complete")
    if task.has_subtasks:
        raise InvalidTransition("Cannot complete a task with subtasks: it follows them")
    _check_actor(task, agent_id)
    holder = task.assigned_agent_id
    previous = move_task(task, "complete")
    task.result = result
    task.progress = 100
    _finish(db, task, previous)
    agent_service.refresh_statuses(db, agent_ids=[holder] if holder else [])
    return task


def fail(
    db: Session,
    *,
    task_id: uuid.UUID,
    error: str,
    retryable: bool = True,
    agent_id: uuid.UUID | None = None,
) -> Task:
    task = tasks.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "fail")
    _check_actor(task, agent_id)
    holder = task.assigned_agent_id
    _fail_held(db, task, error=error, retryable=retryable)
    statistics.record_failure(db, task=task, agent_id=holder)
    agent_service.refresh_statuses(db, agent_ids=[holder] if holder else [])
    return task


def release(
    db: Session, *, task_id: uuid.UUID, reason: str, refresh_agent: bool = True
) -> Task | None:
    """Take a held task back from its agent (agent gone, expired or stuck): an attempt is
    counted and the task is offered again, or fails for good when attempts are spent."""
    task = tasks.get(db, task_id=task_id, lock=True)
    if task is None or task.status not in HELD_TASK_STATUSES:
        return task
    holder = task.assigned_agent_id
    _fail_held(db, task, error=reason, retryable=True)
    if refresh_agent and holder:
        agent_service.refresh_statuses(db, agent_ids=[holder])
    return task


def release_many(db: Session, *, held: list, reason: str) -> None:
    """`release` for many held tasks (rows with id, status, attempts, parent_id,
    session_id and assigned_agent_id, already locked), as the expiry sweeps take them
    back: those that go back to PENDING and have no parent to follow them move in one
    statement; the others (failing for good, or followed by a parent) one by one."""
    max_attempts = settings_of(db).task_max_attempts

    def in_bulk(row) -> bool:
        action = retry_or_fail(attempts=row.attempts + 1, retryable=True, max_attempts=max_attempts)
        return action == "retry" and row.parent_id is None

    bulk = [row for row in held if in_bulk(row)]
    _retry_in_bulk(db, held=bulk, reason=reason)
    for row in held:
        if not in_bulk(row):
            release(db, task_id=row.id, reason=reason, refresh_agent=False)


def _retry_in_bulk(db: Session, *, held: list, reason: str) -> None:
    if not held:
        return
    for row in held:
        task_action(row.status, "retry")
    db.execute(
        update(Task)
        .where(Task.id.in_([row.id for row in held]), Task.status.in_(task_sources("retry")))
        .values(
            **TAKEN_BACK,
            status=task_target("retry"),
            attempts=Task.attempts + 1,
            error=reason,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    events.record_many(
        db,
        [
            (
                events.TASK_STATUS_CHANGED,
                {
                    "task_id": row.id,
                    "session_id": row.session_id,
                    "status": task_target("retry"),
                    "previous_status": row.status,
                    "agent_id": None,
                    "previous_agent_id": row.assigned_agent_id,
                },
            )
            for row in held
        ],
    )
    request_job(db, job_names.ASSIGN_READY_TASKS)


def _fail_held(db: Session, task: Task, *, error: str, retryable: bool) -> None:
    task.attempts += 1
    task.error = error
    action = retry_or_fail(
        attempts=task.attempts, retryable=retryable, max_attempts=settings_of(db).task_max_attempts
    )
    if action == "retry":
        holder = task.assigned_agent_id
        previous = move_task(task, "retry")
        for column, value in TAKEN_BACK.items():
            setattr(task, column, value)
        _record_status(db, task, previous, previous_agent_id=holder)
        request_job(db, job_names.ASSIGN_READY_TASKS)
        if task.parent_id:
            follow_subtasks(db, tasks.get(db, task_id=task.parent_id, lock=True))
    else:
        previous = move_task(task, "fail")
        _finish(db, task, previous)


def cancel(db: Session, *, task_id: uuid.UUID, reason: str = "cancelled") -> Task:
    task = tasks.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "cancel")
    cancel_many(db, task_ids=[task.id], reason=reason)
    return task


def cancel_many(db: Session, *, task_ids: list[uuid.UUID], reason: str) -> None:
    """Cancel unfinished tasks, their subtasks and the tasks waiting on them, and free
    the agents that held them."""
    holders: set[uuid.UUID] = set()
    queue = list(task_ids)
    while queue:
        task = tasks.get(db, task_id=queue.pop(0), lock=True)
        if task is None or task.status in FINISHED_TASK_STATUSES:
            continue
        if task.assigned_agent_id and task.status in HELD_TASK_STATUSES:
            holders.add(task.assigned_agent_id)
        previous = move_task(task, "cancel")
        task.error = task.error or reason
        _finish(db, task, previous)
        queue.extend(tasks.subtasks_of(db, task_id=task.id))
    agent_service.refresh_statuses(db, agent_ids=holders)


def _finish(db: Session, task: Task, previous: TaskStatus) -> None:
    """Everything that follows a task reaching COMPLETED, FAILED or CANCELLED."""
    task.completed_at = utcnow()
    task.deadline_at = None
    _record_status(db, task, previous)
    if task.status == TaskStatus.COMPLETED:
        _release_dependents(db, task)
    else:
        _cancel_dependents(db, task)
    if task.parent_id:
        follow_subtasks(db, tasks.get(db, task_id=task.parent_id, lock=True))
    if task.status == TaskStatus.FAILED:
        session_service.fail(
            db, session_id=task.session_id, reason=f"Task {task.title!r} failed: {task.error}"
        )


def _waiting_dependents(db: Session, task_id: uuid.UUID) -> list[Task]:
    return list(
        db.scalars(
            select(Task)
            .join(TaskDependency, TaskDependency.task_id == Task.id)
            .where(TaskDependency.depends_on_id == task_id, Task.status.in_(WAITING))
            .order_by(Task.id)
            .with_for_update(of=Task)
        )
    )


def _release_dependents(db: Session, task: Task) -> None:
    # Lock the waiting tasks first, then look at their dependencies in a new statement:
    # of two dependencies completing at once, the second to lock sees the first's commit.
    waiting = _waiting_dependents(db, task.id)
    if not waiting:
        return
    dep = aliased(Task)
    unfinished = set(
        db.scalars(
            select(TaskDependency.task_id)
            .join(dep, dep.id == TaskDependency.depends_on_id)
            .where(
                TaskDependency.task_id.in_([t.id for t in waiting]),
                dep.status != TaskStatus.COMPLETED,
            )
        )
    )
    for dependent in waiting:
        if dependent.id not in unfinished:
            previous = move_task(dependent, "release")
            _record_status(db, dependent, previous)
            request_job(db, job_names.ASSIGN_READY_TASKS)


def dependency_reason(dependency_id: uuid.UUID, status: TaskStatus) -> str:
    what = "failed" if status == TaskStatus.FAILED else "was cancelled"
    return f"dependency {dependency_id} {what}"


def _cancel_dependents(db: Session, task: Task) -> None:
    """A task that failed for good or was cancelled will never complete: the tasks
    waiting on it can never run, so they are cancelled, and so on down the chain."""
    waiting = _waiting_dependents(db, task.id)
    if waiting:
        cancel_many(
            db,
            task_ids=[t.id for t in waiting],
            reason=dependency_reason(task.id, TaskStatus(task.status)),
        )


def release_ready_dependents(db: Session) -> int:
    """Sweep: BLOCKED tasks whose dependencies all completed (a lost release)."""
    dep = aliased(Task)
    stuck = db.scalars(
        select(Task)
        .where(
            Task.status.in_(WAITING),
            ~exists(
                select(TaskDependency.task_id)
                .join(dep, dep.id == TaskDependency.depends_on_id)
                .where(TaskDependency.task_id == Task.id, dep.status != TaskStatus.COMPLETED)
            ),
        )
        .with_for_update(of=Task, skip_locked=True)
    ).all()
    for task in stuck:
        previous = move_task(task, "release")
        _record_status(db, task, previous)
        request_job(db, job_names.ASSIGN_READY_TASKS)
    return len(stuck)


def cancel_orphaned_dependents(db: Session, *, limit: int = 500) -> int:
    """Sweep: waiting tasks with a dependency that failed for good or was cancelled can
    never run; they are cancelled (with the cascade that follows) as the move would have."""
    dep = aliased(Task)
    stranded = db.execute(
        select(Task.id, dep.id, dep.status)
        .join(TaskDependency, TaskDependency.task_id == Task.id)
        .join(dep, dep.id == TaskDependency.depends_on_id)
        .where(Task.status.in_(WAITING), dep.status.in_(NEVER_COMPLETING))
        .order_by(Task.id)
        .limit(limit)
    ).all()
    seen: set[uuid.UUID] = set()
    for task_id, dep_id, dep_status in stranded:
        if task_id in seen:
            continue
        seen.add(task_id)
        cancel_many(db, task_ids=[task_id], reason=dependency_reason(dep_id, dep_status))
    return len(seen)


def follow_subtasks(db: Session, parent: Task | None) -> None:
    """A task with subtasks takes its status from them."""
    if parent is None or not parent.has_subtasks or parent.status in FINISHED_TASK_STATUSES:
        return
    counts = dict(
        db.execute(
            select(Task.status, func.count())
            .where(Task.parent_id == parent.id)
            .group_by(Task.status)
        )
        .tuples()
        .all()
    )
    if not counts:
        return
    unfinished = sum(n for s, n in counts.items() if s not in FINISHED_TASK_STATUSES)
    if counts.get(TaskStatus.FAILED):
        target = TaskStatus.FAILED
    elif unfinished == 0:
        target = TaskStatus.COMPLETED if counts.get(TaskStatus.COMPLETED) else TaskStatus.CANCELLED
    elif counts.get(TaskStatus.IN_PROGRESS) or counts.get(TaskStatus.COMPLETED):
        target = TaskStatus.IN_PROGRESS
    else:
        target = TaskStatus.PENDING
    if target == parent.status:
        return
    action = follow_action(TaskStatus(parent.status), target)
    if action is None:
        raise InvalidTransition(f"A task that is {parent.status} cannot follow its subtasks")
    previous = move_task(parent, action)
    if target == TaskStatus.IN_PROGRESS and parent.started_at is None:
        parent.started_at = utcnow()
    if target == TaskStatus.FAILED:
        parent.error = "a subtask failed"
    if target in FINISHED_TASK_STATUSES:
        _finish(db, parent, previous)
    else:
        _record_status(db, parent, previous)


def _record_status(
    db: Session, task: Task, previous: TaskStatus, *, previous_agent_id: uuid.UUID | None = None
) -> None:
    """`previous_agent_id`: the agent a task was taken back from, so that its own stream
    tells it at once (the event's `agent_id` is the holder, none after a take-back)."""
    task.updated_at = utcnow()
    extra = {"previous_agent_id": previous_agent_id} if previous_agent_id else {}
    events.record(
        db,
        events.TASK_STATUS_CHANGED,
        task_id=task.id,
        session_id=task.session_id,
        status=task.status,
        previous_status=previous,
        agent_id=task.assigned_agent_id,
        **extra,
    )
