"""How the fleet is doing: session statistics, agent performance, each agent's figures.

What counts for an agent (docs/API.md, "Statistics"):
- a task it completed (`complete`; the task keeps its `assigned_agent_id` for good);
- a failure of its attempt: each `fail` while it held the task, retryable or not, the
  timeout sweep's included (a `task_failures` row, written with the move: the tasks
  table forgets a holder once the task is retried);
- nothing else: a task taken back from it (deregistration, heartbeat expiry) or cancelled
  while it held it counts for nobody.

An agent's figures are counted from those rows (indexes: `ix_tasks_completed_by_agent`,
`ix_task_failures_agent_id`), so nothing can drift. The fleet summary reads the same
figures from `agent_task_totals`, and the session statistics add up
`session_status_counts`: database triggers keep both in the transaction of every change
(migration 0010), so no call scans a million tasks or every session.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Float, and_, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from shared.enums import (
    FINISHED_SESSION_STATUSES,
    AgentStatus,
    AgentType,
    SessionStatus,
    TaskStatus,
)
from shared.models import Agent, SessionStatusCounts, Task, WorkSession
from shared.models.task_failure import AgentTaskTotals, TaskFailure


def success_rate(completed: int, failed: int) -> float | None:
    """completed / (completed + failed), 4 decimals; None before anything finished."""
    finished = completed + failed
    return round(completed / finished, 4) if finished else None


def record_failure(db: Session, *, task: Task, agent_id: uuid.UUID | None) -> None:
    """The attempt `task.attempts` of `agent_id` failed (call after counting it)."""
    if agent_id is not None:
        db.add(TaskFailure(task_id=task.id, attempt=task.attempts, agent_id=agent_id))


def agent_figures(db: Session, *, agent_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict]:
    """`tasks_completed`, `tasks_failed` and `success_rate` per agent, in one query."""
    ids = list(agent_ids)
    counts = {agent_id: [0, 0] for agent_id in ids}
    if ids:
        completed = (
            select(Task.assigned_agent_id, literal(0), func.count())
            .where(Task.assigned_agent_id.in_(ids), Task.status == TaskStatus.COMPLETED)
            .group_by(Task.assigned_agent_id)
        )
        failed = (
            select(TaskFailure.agent_id, literal(1), func.count())
            .where(TaskFailure.agent_id.in_(ids))
            .group_by(TaskFailure.agent_id)
        )
        for agent_id, kind, n in db.execute(union_all(completed, failed)):
            counts[agent_id][kind] = n
    return {
        agent_id: {
            "tasks_completed": completed,
            "tasks_failed": failed,
            "success_rate": success_rate(completed, failed),
        }
        for agent_id, (completed, failed) in counts.items()
    }


def session_statistics(
    db: Session,
    *,
    pool: str | None = None,
    pools: Collection[str] | None = None,
    since: datetime | None = None,
) -> dict:
    """Sessions (of `pool`, of `pools` (a token scoped to pools), created at or after
    `since`) by status; the mean time from start to finish of the COMPLETED ones;
    COMPLETED over finished.

    Whole days come from `session_status_counts` (a few rows a day); with `since`, the
    day it falls in is counted from the sessions created from `since` to that day's end
    (a covering index), so the answer is exact to the microsecond."""
    counts = select(
        SessionStatusCounts.status,
        SessionStatusCounts.sessions,
        SessionStatusCounts.timed,
        SessionStatusCounts.run_microseconds,
    )
    if pool is not None:
        counts = counts.where(SessionStatusCounts.pool == pool)
    if pools is not None:
        counts = counts.where(SessionStatusCounts.pool.in_(sorted(pools)))
    parts = [counts]
    if since is not None:
        first_day = since.astimezone(UTC).date()
        counts = counts.where(SessionStatusCounts.created_on > first_day)
        day_end = datetime.combine(first_day + timedelta(days=1), datetime.min.time(), UTC)
        run = func.round(
            func.extract("epoch", WorkSession.completed_at - WorkSession.started_at) * 1_000_000
        )
        timed = and_(
            WorkSession.status == SessionStatus.COMPLETED,
            WorkSession.started_at.is_not(None),
            WorkSession.completed_at.is_not(None),
        )
        edge = (
            select(
                WorkSession.status,
                func.count(),
                func.count().filter(timed),
                func.coalesce(func.sum(run).filter(timed), 0),
            )
            .where(WorkSession.created_at >= since, WorkSession.created_at < day_end)
            .group_by(WorkSession.status)
        )
        if pool is not None:
            edge = edge.where(WorkSession.pool == pool)
        if pools is not None:
            edge = edge.where(WorkSession.pool.in_(sorted(pools)))
        parts = [counts, edge]
    totals = union_all(*parts).subquery()
    query = select(
        totals.c.status,
        func.sum(totals.c.sessions),
        func.sum(totals.c.timed),
        func.sum(totals.c.run_microseconds),
    ).group_by(totals.c.status)
    by_status = dict.fromkeys((s.value for s in SessionStatus), 0)
    timed_sessions, run_microseconds = 0, 0
    for status, count, timed_count, microseconds in db.execute(query):
        by_status[SessionStatus(status).value] = int(count)
        if status == SessionStatus.COMPLETED:
            timed_sessions, run_microseconds = int(timed_count), int(microseconds)
    finished = sum(by_status[s.value] for s in FINISHED_SESSION_STATUSES)
    completed = by_status[SessionStatus.COMPLETED.value]
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "avg_completion_time_ms": (
            round(run_microseconds / timed_sessions / 1000, 1) if timed_sessions else None
        ),
        "success_rate": round(completed / finished, 4) if finished else None,
    }


def agent_performance(
    db: Session, *, pool: str | None = None, pools: Collection[str] | None = None
) -> dict:
    """Live and active agents, the mean of the agents' success rates, the tasks completed:
    for the fleet (or `pool`) and per agent type. Agent counts are of live agents; task
    figures include deregistered agents' (their work stays done)."""
    live = Agent.deregistered_at.is_(None)
    finished = AgentTaskTotals.tasks_completed + AgentTaskTotals.tasks_failed
    rate = cast(AgentTaskTotals.tasks_completed, Float) / func.nullif(finished, 0)
    query = (
        select(
            Agent.type,
            func.grouping(Agent.type).label("overall"),
            func.count().filter(live).label("total_agents"),
            func.count().filter(live, Agent.status != AgentStatus.OFFLINE).label("active"),
            func.avg(rate).label("avg_success_rate"),
            func.coalesce(func.sum(AgentTaskTotals.tasks_completed), 0).label("completed"),
        )
        .outerjoin(AgentTaskTotals, AgentTaskTotals.agent_id == Agent.id)
        .group_by(func.grouping_sets(Agent.type, ()))
    )
    if pool is not None:
        query = query.where(Agent.pool == pool)
    if pools is not None:
        query = query.where(Agent.pool.in_(sorted(pools)))
    empty = {
        "total_agents": 0,
        "active_agents": 0,
        "avg_success_rate": None,
        "total_tasks_completed": 0,
    }
    overall = dict(empty)
    by_type = {t.value: dict(empty) for t in AgentType}
    for row in db.execute(query):
        figures = {
            "total_agents": row.total_agents,
            "active_agents": row.active,
            "avg_success_rate": (
                round(row.avg_success_rate, 4) if row.avg_success_rate is not None else None
            ),
            "total_tasks_completed": int(row.completed),
        }
        if row.overall:
            overall = figures
        else:
            by_type[AgentType(row.type).value] = figures
    return {**overall, "by_type": by_type}
