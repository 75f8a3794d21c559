"""Task creation with dependencies and a parent (CONTRACT section 4).

Lock order, everywhere: a task before its parent, tasks before their session, tasks
before agents, so concurrent requests and jobs wait for each other instead of
deadlocking. (A session's finishing move locks the session first, and so takes its
tasks only with SKIP LOCKED: shared/services/settle.py.)
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.enums import FINISHED_SESSION_STATUSES, Capability, Complexity, TaskStatus
from shared.errors import Conflict, InvalidTransition, ValidationError
from shared.models import Task, TaskDependency
from shared.services import sessions as session_service
from shared.services import task_lifecycle
from shared.services.common import settings_of
from shared.services.tasks import get
from shared.states import FINISHED_TASK_STATUSES, HELD_TASK_STATUSES
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
        request_job(db, job_names.ASSIGN_READY_TASKS)
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
