"""Assignment of ready tasks to agents (CONTRACT section 5).

One algorithm for the HTTP `assign` call and the Celery job: lock a batch of ready tasks
(session priority, then age) with SKIP LOCKED, lock the agents with room, count what they
hold, and match greedily, the least loaded fitting agent first. The agent rows stay locked
until the commit, so however many callers assign at once no agent exceeds its capacity,
and the task rows stay locked, so no task is given twice.
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import Integer, Select, and_, bindparam, case, select, text, update
from sqlalchemy.orm import Session

from shared import events
from shared.enums import PRIORITY_RANK, AgentStatus, SessionStatus
from shared.errors import AgentUnavailable, InvalidTransition
from shared.models import Agent, Task, WorkSession
from shared.models.types import utcnow
from shared.services import agents as agent_service
from shared.services import tasks as task_service
from shared.services.common import settings_of
from shared.states import (
    AGENT_STATUSES_WITH_ROOM,
    FULL_LOAD,
    derive_agent_status,
    has_room,
    move_agent,
    task_action,
    task_sources,
    task_target,
)

DEFAULT_BATCH = 500

_priority_rank = case(
    {p.value: rank for p, rank in PRIORITY_RANK.items()}, value=WorkSession.priority
)


@dataclass
class _Slot:
    agent_id: uuid.UUID
    pool: str
    capabilities: frozenset[str]
    max_tasks: int
    load: int
    held: int
    status: AgentStatus
    version: int = 0

    def has_room(self) -> bool:
        return has_room(held=self.held, max_tasks=self.max_tasks, load=self.load)

    def key(self) -> tuple:
        return (self.held / self.max_tasks, self.load, self.agent_id)


# A task's need: its pool (its session's) and its required capabilities.
Need = tuple[str, frozenset[str]]


@dataclass
class _Matcher:
    """Least loaded fitting agent per pool and set of required capabilities, kept in
    lazy heaps."""

    slots: dict[uuid.UUID, _Slot]
    heaps: dict[Need, list] = field(default_factory=dict)
    members: dict[uuid.UUID, list[Need]] = field(default_factory=dict)

    def best(self, need: Need) -> _Slot | None:
        heap = self.heaps.get(need)
        if heap is None:
            pool, required = need
            heap = [
                (*slot.key(), slot.version)
                for slot in self.slots.values()
                if slot.pool == pool and slot.has_room() and required <= slot.capabilities
            ]
            heapq.heapify(heap)
            self.heaps[need] = heap
            for *_, agent_id, _version in heap:
                self.members.setdefault(agent_id, []).append(need)
        while heap:
            *_, agent_id, version = heap[0]
            slot = self.slots[agent_id]
            if version == slot.version and slot.has_room():
                return slot
            heapq.heappop(heap)
        return None

    def take(self, slot: _Slot) -> None:
        slot.held += 1
        slot.version += 1
        if slot.has_room():
            for need in self.members.get(slot.agent_id, []):
                heapq.heappush(self.heaps[need], (*slot.key(), slot.version))


# Agents whose status says they have room (the status is derived from what they hold
# and report, states.derive_agent_status); `_Slot.has_room` checks the counted figures.
_with_room = and_(
    Agent.status.in_(sorted(AGENT_STATUSES_WITH_ROOM)), Agent.current_load < FULL_LOAD
)

_ready = and_(
    Task.status.in_(task_sources("assign")),
    Task.has_subtasks.is_(False),
    Task.decomposition_template.is_(None),
)


@cache
def _ready_query(*, by_ids: bool, by_agent: bool) -> Select:
    """Ready tasks of running sessions that some agent of their pool with room covers
    (it has every capability they require), most urgent first. Tasks nobody can take are
    not selected, so they never hold back the ones behind them. Built once per shape
    (statements are the same every call; only the parameters change)."""
    fitting = select(Agent.id).where(
        _with_room,
        Agent.pool == WorkSession.pool,
        Agent.capabilities.contains(Task.required_capabilities),
    )
    if by_agent:
        fitting = fitting.where(Agent.id == bindparam("agent_id"))
    query = (
        select(Task.id, WorkSession.pool, Task.required_capabilities, Task.status)
        .join(WorkSession, WorkSession.id == Task.session_id)
        .where(_ready, WorkSession.status == SessionStatus.RUNNING, fitting.exists())
        .order_by(_priority_rank, Task.created_at, Task.id)
        .limit(bindparam("limit", type_=Integer))
    )
    # FOR NO KEY UPDATE: a task creation key-share-locks the tasks it depends on
    # (tasks.py), which must not make assignment skip them.
    if by_ids:
        return query.where(Task.id.in_(bindparam("task_ids", expanding=True))).with_for_update(
            of=Task, key_share=True
        )
    return query.with_for_update(of=Task, skip_locked=True, key_share=True)


def _ready_tasks(
    db: Session, *, limit: int, task_ids: list[uuid.UUID] | None, agent_id: uuid.UUID | None
):
    query = _ready_query(by_ids=task_ids is not None, by_agent=agent_id is not None)
    params = {"limit": limit, "task_ids": task_ids, "agent_id": agent_id}
    return db.connection().execute(query, params).all()


@cache
def _lock_query(*, by_agent: bool) -> Select:
    query = select(
        Agent.id,
        Agent.pool,
        Agent.capabilities,
        Agent.max_concurrent_tasks,
        Agent.current_load,
        Agent.status,
    ).where(_with_room)
    if by_agent:
        return query.where(Agent.id == bindparam("agent_id")).with_for_update()
    # Wait (in id order, so concurrent jobs cannot deadlock) rather than skip: a job
    # that skipped locked agents would find none and leave its ready tasks waiting.
    return query.order_by(Agent.id).with_for_update()


def _lock_agents(db: Session, *, agent_id: uuid.UUID | None) -> dict[uuid.UUID, _Slot]:
    query = _lock_query(by_agent=agent_id is not None)
    rows = db.connection().execute(query, {"agent_id": agent_id}).all()
    # Counted by a statement of its own, after the locks: its snapshot then sees what
    # the transactions that held them committed. A count inside the locking SELECT would
    # read the snapshot it took before waiting, and miss their assignments.
    held = agent_service.held_counts(db, agent_ids=[r.id for r in rows])
    return {
        r.id: _Slot(
            r.id,
            r.pool,
            frozenset(r.capabilities),
            r.max_concurrent_tasks,
            r.current_load,
            held[r.id],
            AgentStatus(r.status),
        )
        for r in rows
    }


_APPLY_SQL = text(
    f"""
    UPDATE tasks SET status = '{task_target("assign")}', assigned_agent_id = pairs.agent_id,
        assigned_at = :now, deadline_at = :deadline, updated_at = :now
    FROM (SELECT unnest(CAST(:task_ids AS uuid[])) AS task_id,
                 unnest(CAST(:agent_ids AS uuid[])) AS agent_id) AS pairs
    WHERE tasks.id = pairs.task_id
        AND tasks.status IN ({", ".join(f"'{s}'" for s in task_sources("assign"))})
    RETURNING tasks.id, tasks.session_id, tasks.assigned_agent_id, tasks.created_at,
        tasks.attempts
    """
)


@dataclass(frozen=True)
class Assigned:
    """What one call assigned: (task_id, agent_id) pairs, and for /metrics each task's
    (created_at, assigned_at, attempts) (shared/metrics.observe_assignments)."""

    pairs: list[tuple[uuid.UUID, uuid.UUID]]
    times: list[tuple[datetime, datetime, int]]


def assign_ready(
    db: Session,
    *,
    limit: int = DEFAULT_BATCH,
    task_ids: list[uuid.UUID] | None = None,
    agent_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Assign up to `limit` ready tasks; returns (task_id, agent_id) pairs."""
    return assign_batch(db, limit=limit, task_ids=task_ids, agent_id=agent_id).pairs


def assign_batch(
    db: Session,
    *,
    limit: int = DEFAULT_BATCH,
    task_ids: list[uuid.UUID] | None = None,
    agent_id: uuid.UUID | None = None,
) -> Assigned:
    """`assign_ready`, with the times the assignment job reports to /metrics."""
    db.flush()  # the statements below are Core ones, which do not autoflush
    ready = _ready_tasks(db, limit=limit, task_ids=task_ids, agent_id=agent_id)
    if not ready:
        return Assigned([], [])
    matcher = _Matcher(_lock_agents(db, agent_id=agent_id))
    pairs: list[tuple[uuid.UUID, uuid.UUID]] = []
    previous = {task_id: status for task_id, _, _, status in ready}
    for task_id, pool, required, _ in ready:
        slot = matcher.best((pool, frozenset(required)))
        if slot is not None:
            matcher.take(slot)
            pairs.append((task_id, slot.agent_id))
    if not pairs:
        return Assigned([], [])
    now = utcnow()
    deadline = now + timedelta(seconds=settings_of(db).task_start_timeout_seconds)
    rows = db.execute(
        _APPLY_SQL,
        {
            "task_ids": [str(t) for t, _ in pairs],
            "agent_ids": [str(a) for _, a in pairs],
            "now": now,
            "deadline": deadline,
        },
    ).all()
    db.expire_all()  # the UPDATE bypassed the identity map
    recorded: list[tuple[str, dict]] = []
    assigned = task_target("assign")
    for task_id, session_id, holder, _, _ in rows:
        common = {"task_id": task_id, "session_id": session_id, "agent_id": holder}
        recorded.append(
            (
                events.TASK_STATUS_CHANGED,
                {**common, "status": assigned, "previous_status": previous[task_id]},
            )
        )
        recorded.append((events.TASK_ASSIGNED, {**common, "status": assigned}))
    _record_agent_changes(db, matcher, recorded)
    events.record_many(db, recorded)
    return Assigned(
        [(r.id, r.assigned_agent_id) for r in rows],
        [(r.created_at, now, r.attempts) for r in rows],
    )


def _record_agent_changes(db: Session, matcher: _Matcher, recorded: list) -> None:
    changed: dict[uuid.UUID, AgentStatus] = {}
    for slot in matcher.slots.values():
        target = derive_agent_status(
            online=True, held=slot.held, max_tasks=slot.max_tasks, load=slot.load
        )
        previous = move_agent(slot, target)
        if previous != target:
            changed[slot.agent_id] = target
            recorded.append(
                (
                    events.AGENT_STATUS_CHANGED,
                    {
                        "agent_id": slot.agent_id,
                        "status": target,
                        "previous_status": previous,
                        "current_load": slot.load,
                        "active_tasks": slot.held,
                    },
                )
            )
    for target in set(changed.values()):
        db.execute(
            update(Agent)
            .where(Agent.id.in_([a for a, t in changed.items() if t == target]))
            .values(status=target, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def assign_one(db: Session, *, task_id: uuid.UUID, agent_id: uuid.UUID | None = None) -> Task:
    """The HTTP `assign`: this task now, to `agent_id` or the best fitting agent."""
    task = task_service.get_or_raise(db, task_id=task_id, lock=True)
    task_action(task.status, "assign")
    if task.has_subtasks or task.decomposition_template is not None:
        raise InvalidTransition("Cannot assign a decomposed task: its subtasks are assigned")
    work_session = db.get(WorkSession, task.session_id)
    if work_session.status != SessionStatus.RUNNING:
        raise InvalidTransition(f"Cannot assign a task while its session is {work_session.status}")
    agent = agent_service.get_or_raise(db, agent_id=agent_id) if agent_id is not None else None
    if not assign_ready(db, limit=1, task_ids=[task_id], agent_id=agent_id):
        if agent is not None:
            raise AgentUnavailable(_why_not(db, agent, task))
        raise AgentUnavailable(
            "No agent is online with the capabilities "
            f"{', '.join(task.required_capabilities)} and room for another task"
        )
    db.refresh(task)
    return task


def _why_not(db: Session, agent: Agent, task: Task) -> str:
    """Why the named agent could not take the task: the first reason that holds."""
    db.refresh(agent)  # as assign_ready has just read it
    missing = [c for c in task.required_capabilities if c not in agent.capabilities]
    if missing:
        return f"Agent {agent.id} lacks the capabilities {', '.join(missing)}"
    if agent.deregistered_at is not None:
        return f"Agent {agent.id} was deregistered"
    pool = db.scalar(select(WorkSession.pool).where(WorkSession.id == task.session_id))
    if agent.pool != pool:
        return f"Agent {agent.id} is in pool {agent.pool!r}; the task's session is in {pool!r}"
    if agent.status == AgentStatus.OFFLINE:
        return f"Agent {agent.id} is OFFLINE"
    if agent.current_load >= 100:
        return f"Agent {agent.id} is BUSY: it reports a load of {agent.current_load}%"
    held = agent_service.held_counts(db, agent_ids=[agent.id])[agent.id]
    if held >= agent.max_concurrent_tasks:
        return (
            f"Agent {agent.id} is BUSY: it holds {held} of its {agent.max_concurrent_tasks} tasks"
        )
    return f"Agent {agent.id} cannot take the task now (it is {agent.status})"
