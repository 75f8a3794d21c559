"""What the API answers for sessions, tasks and agents: each entity's fields plus what is
derived for it (progress, dependencies and subtasks, held tasks and figures), computed for
a whole page in a few queries. Shared by the resources that return them."""

from __future__ import annotations

from orchestrator_api.database import db
from shared.models import Agent, Task
from shared.services import agents as agent_service
from shared.services import sessions as session_service
from shared.services import statistics
from shared.services import tasks as task_service

SESSION_FIELDS = (
    "id",
    "pool",
    "title",
    "status",
    "type",
    "priority",
    "initial_prompt",
    "error",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
)


def session_views(sessions, progress: dict | None = None) -> list[dict]:
    """`progress` by session id, when it was read with the sessions."""
    if progress is None:
        progress = session_service.progress_of(db(), session_ids=[s.id for s in sessions])
    return [
        {**{f: getattr(s, f) for f in SESSION_FIELDS}, "progress": progress[s.id]} for s in sessions
    ]


TASK_FIELDS = tuple(c.key for c in Task.__table__.columns)


def task_views(
    tasks: list[Task], depends_on: dict | None = None, subtasks: dict | None = None
) -> list[dict]:
    """Tasks with their dependencies and subtasks (by task id, when they were read with
    the tasks; else in two queries for the whole page)."""
    ids = [t.id for t in tasks]
    if depends_on is None:
        depends_on = task_service.dependencies_of(db(), task_ids=ids)
    if subtasks is None:
        subtasks = task_service.subtasks_of_many(db(), task_ids=ids)
    return [
        {
            **{f: getattr(t, f) for f in TASK_FIELDS},
            "depends_on": depends_on[t.id],
            "subtasks": subtasks[t.id],
        }
        for t in tasks
    ]


AGENT_FIELDS = tuple(c.key for c in Agent.__table__.columns)


def agent_views(agents: list[Agent], held: dict | None = None) -> list[dict]:
    ids = [a.id for a in agents]
    held = held if held is not None else agent_service.held_counts(db(), agent_ids=ids)
    figures = statistics.agent_figures(db(), agent_ids=ids)
    return [
        {**{f: getattr(a, f) for f in AGENT_FIELDS}, "active_tasks": held[a.id], **figures[a.id]}
        for a in agents
    ]
