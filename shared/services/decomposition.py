"""Decomposition: accepted at once by the API, done by a job (CONTRACT section 4)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.enums import FINISHED_SESSION_STATUSES, DecompositionTemplate, TaskStatus
from shared.errors import Conflict
from shared.models import Task, WorkSession
from shared.models.types import utcnow
from shared.services import task_creation
from shared.services import tasks as task_service
from shared.services.common import settings_of
from shared.templates import TEMPLATES
from shared.unit_of_work import request_job

log = logging.getLogger(__name__)


def accept(db: Session, *, task_id: uuid.UUID, template: DecompositionTemplate) -> Task:
    """Validate and record the request; the job creates the subtasks after the commit."""
    task = task_service.get_or_raise(db, task_id=task_id, lock=True)
    if task.decomposition_template is not None or task.has_subtasks:
        raise Conflict(f"Task {task_id} is already decomposed")
    if task.status != TaskStatus.PENDING:
        raise Conflict(f"Only a PENDING task can be decomposed; this one is {task.status}")
    task.decomposition_template = DecompositionTemplate(template)
    task.updated_at = utcnow()
    request_job(db, job_names.DECOMPOSE_TASK, str(task_id))
    return task


def run(db: Session, *, task_id: uuid.UUID) -> list[uuid.UUID]:
    """Create the subtask DAG once. The parent's row lock serialises concurrent runs and
    the unique (parent_id, template_step) constraint backs it in the database."""
    parent = task_service.get(db, task_id=task_id, lock=True)
    if parent is None:
        log.info("decomposition skipped: task %s no longer exists", task_id)
        return []
    if parent.decomposed_at is not None or parent.decomposition_template is None:
        return []
    session_status = db.scalar(
        select(WorkSession.status).where(WorkSession.id == parent.session_id)
    )
    if parent.status != TaskStatus.PENDING or session_status in FINISHED_SESSION_STATUSES:
        log.info("decomposition skipped: task %s is %s", task_id, parent.status)
        parent.decomposed_at = utcnow()
        return []
    created: dict[str, uuid.UUID] = {}
    for step in TEMPLATES[parent.decomposition_template]:
        subtask = task_creation.create(
            db,
            session_id=parent.session_id,
            parent_id=parent.id,
            title=f"{step.title}: {parent.title}"[:200],
            description=parent.description,
            complexity=parent.complexity,
            required_capabilities=list(step.capabilities),
            depends_on=[created[key] for key in step.depends_on],
            template_step=step.key,
        )
        created[step.key] = subtask.id
    parent.decomposed_at = utcnow()
    events.record(
        db,
        events.TASK_DECOMPOSED,
        task_id=parent.id,
        session_id=parent.session_id,
        status=parent.status,
        template=parent.decomposition_template,
        subtask_ids=list(created.values()),
    )
    return list(created.values())


def never_run(db: Session, *, limit: int = 100) -> list[uuid.UUID]:
    """Decompositions accepted a while ago (three sweep periods) but not done: the job was
    lost. Doing one twice is harmless: `run` is idempotent."""
    cutoff = utcnow() - timedelta(seconds=3 * settings_of(db).sweep_interval_seconds)
    return list(
        db.scalars(
            select(Task.id)
            .where(
                Task.decomposition_template.is_not(None),
                Task.decomposed_at.is_(None),
                Task.updated_at < cutoff,
            )
            .order_by(Task.updated_at)
            .limit(limit)
        )
    )
