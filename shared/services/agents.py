"""Agents: registry, heartbeats and their derived status (CONTRACT section 3).

How many tasks an agent holds is always counted from the tasks table (no counter that
can drift); `status` is re-derived from that count whenever it can change.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable

from sqlalchemy import Uuid, and_, any_, bindparam, cast, func, literal_column, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import events, job_names
from shared.db import keeps_session_state
from shared.enums import AgentStatus, AgentType, Capability
from shared.errors import AgentNameTaken, AgentNotFound
from shared.models import Agent, Task
from shared.models.types import utcnow
from shared.pools import DEFAULT_POOL
from shared.services.common import Page, paginate, settings_of
from shared.states import (
    HELD_TASK_STATUSES,
    agent_status_sql,
    derive_agent_status,
    has_room_sql,
    move_agent,
)
from shared.unit_of_work import request_job


def register(
    db: Session,
    *,
    name: str,
    type: AgentType,
    capabilities: list[Capability],
    max_concurrent_tasks: int = 5,
    pool: str = DEFAULT_POOL,
) -> Agent:
    agent = Agent(
        id=uuid.uuid4(),
        pool=pool,
        name=name,
        type=type,
        capabilities=[Capability(c).value for c in capabilities],
        max_concurrent_tasks=max_concurrent_tasks,
        current_load=0,
        status=AgentStatus.IDLE,
        last_heartbeat_at=utcnow(),
    )
    try:
        with db.begin_nested():
            db.add(agent)
    except IntegrityError:
        raise AgentNameTaken(f"An agent named {name!r} is already registered") from None
    events.record(
        db,
        events.AGENT_REGISTERED,
        agent_id=agent.id,
        pool=pool,
        status=agent.status,
        current_load=0,
        active_tasks=0,
    )
    request_job(db, job_names.ASSIGN_READY_TASKS)
    return agent


def get(db: Session, *, agent_id: uuid.UUID, lock: bool = False) -> Agent | None:
    query = select(Agent).where(Agent.id == agent_id)
    if lock:
        query = query.with_for_update()
    return db.scalar(query)


def get_or_raise(db: Session, *, agent_id: uuid.UUID, lock: bool = False) -> Agent:
    """Live or deregistered (a deregistered agent is a record: it can still be read)."""
    agent = get(db, agent_id=agent_id, lock=lock)
    if agent is None:
        raise AgentNotFound(f"Agent with ID {agent_id} not found")
    return agent


def get_live_or_raise(db: Session, *, agent_id: uuid.UUID, lock: bool = False) -> Agent:
    """An agent that may act or be acted on: a deregistered one is not found."""
    agent = get_or_raise(db, agent_id=agent_id, lock=lock)
    if agent.deregistered_at is not None:
        raise AgentNotFound(f"Agent {agent_id} was deregistered")
    return agent


def is_live(db: Session, *, agent_id: uuid.UUID) -> bool:
    return bool(
        db.scalar(select(func.count()).where(Agent.id == agent_id, Agent.deregistered_at.is_(None)))
    )


# The ids as one array parameter: psycopg2 quotes a list of strings in C, while each
# UUID of an IN list goes through its Python adapter (50 agents: 0.63-0.71 -> 0.42-0.63 ms).
_HELD_COUNTS = (
    select(Task.assigned_agent_id, func.count())
    .where(
        Task.assigned_agent_id == any_(cast(bindparam("ids"), postgresql.ARRAY(Uuid))),
        Task.status.in_(sorted(HELD_TASK_STATUSES)),
    )
    .group_by(Task.assigned_agent_id)
)


def held_counts(db: Session, *, agent_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Tasks held (ASSIGNED or IN_PROGRESS) per agent, in one query."""
    ids = list(agent_ids)
    counts = dict.fromkeys(ids, 0)
    if ids:
        rows = db.execute(_HELD_COUNTS, {"ids": [str(i) for i in ids]})
        counts.update(dict(rows.tuples().all()))
    return counts


_held = (
    select(func.count())
    .where(Task.assigned_agent_id == Agent.id, Task.status.in_(HELD_TASK_STATUSES))
    .correlate(Agent)
    .scalar_subquery()
)


def list_agents(
    db: Session,
    *,
    capability: Capability | None = None,
    available_only: bool = False,
    status: AgentStatus | None = None,
    type: AgentType | None = None,
    include_deregistered: bool = False,
    pool: str | None = None,
    pools: Collection[str] | None = None,
    page: int = 1,
    page_size: int = 20,
) -> Page[Agent]:
    """`pools`: only those (a token scoped to pools); None: every pool."""
    query = select(Agent).order_by(Agent.created_at.desc(), Agent.id.desc())
    if pools is not None:
        query = query.where(Agent.pool.in_(sorted(pools)))
    if pool is not None:
        query = query.where(Agent.pool == pool)
    if not include_deregistered:
        query = query.where(Agent.deregistered_at.is_(None))
    if capability is not None:
        query = query.where(Agent.capabilities.contains([Capability(capability).value]))
    if status is not None:
        query = query.where(Agent.status == status)
    if type is not None:
        query = query.where(Agent.type == type)
    if available_only:
        query = query.where(
            and_(
                Agent.status != AgentStatus.OFFLINE,
                has_room_sql(_held, Agent.max_concurrent_tasks, Agent.current_load),
            )
        )
    return paginate(db, query, page=page, page_size=page_size)


def held_tasks(db: Session, *, agent_id: uuid.UUID) -> list[Task]:
    get_or_raise(db, agent_id=agent_id)
    return list(
        db.scalars(
            select(Task)
            .where(Task.assigned_agent_id == agent_id, Task.status.in_(HELD_TASK_STATUSES))
            .order_by(Task.assigned_at, Task.id)
        )
    )


def _sql(expression) -> str:
    """An expression as literal SQL, for the prepared statement below."""
    return str(
        expression.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )


# The hottest path. One statement for a whole batch of heartbeats (the API groups the
# heartbeats that arrive together, shared/group_commit.py): it locks the agents in id
# order (as assignment does), counts their held tasks, updates load, time and status, and
# records the events: agent.status_changed on a change of status; agent.heartbeat when
# the status or the load changed, or the agent's last one is older than $3 seconds
# (HEARTBEAT_EVENT_INTERVAL_SECONDS: an agent that beats every few seconds with nothing
# new does not fill the outbox and the streams). It is prepared once per connection
# (planning it costs more than running it) unless the connection may not keep session
# state (behind PgBouncer in transaction mode; DATABASE_PREPARED_STATEMENTS): then it is
# sent whole each time. The commit need not wait for the disk: losing the last second of
# heartbeats in a crash is harmless (the agents send the next one).
_HEARTBEAT_QUERY = f"""
    WITH input AS (
        SELECT DISTINCT ON (id) id, load
        FROM unnest($1, $2) WITH ORDINALITY
            AS given(id, load, n)
        ORDER BY id, n DESC
    ), previous AS (
        SELECT agents.id, agents.status, agents.current_load, agents.max_concurrent_tasks,
            agents.heartbeat_event_at
        FROM agents JOIN input USING (id)
        WHERE agents.deregistered_at IS NULL
        ORDER BY agents.id FOR UPDATE OF agents
    ), held AS (
        SELECT assigned_agent_id AS id, count(*) AS n FROM tasks
        WHERE assigned_agent_id IN (SELECT id FROM input)
            AND {_sql(Task.status.in_(sorted(HELD_TASK_STATUSES)))}
        GROUP BY assigned_agent_id
    ), next AS (
        SELECT previous.id, input.load, coalesce(held.n, 0) AS active_tasks,
            previous.status AS previous_status, previous.current_load AS previous_load,
            previous.heartbeat_event_at AS previous_event_at,
            {
    _sql(
        agent_status_sql(
            literal_column("coalesce(held.n, 0)"),
            literal_column("previous.max_concurrent_tasks"),
            literal_column("input.load"),
        )
    )
} AS status
        FROM previous JOIN input USING (id) LEFT JOIN held USING (id)
    ), decided AS (
        SELECT next.*, (
            next.status <> next.previous_status OR next.load <> next.previous_load
            OR next.previous_event_at IS NULL
            OR next.previous_event_at <= now() - make_interval(secs => $3)
        ) AS heartbeat_event
        FROM next
    ), updated AS (
        UPDATE agents AS a SET
            current_load = decided.load,
            last_heartbeat_at = now(),
            updated_at = now(),
            status = decided.status,
            heartbeat_event_at = CASE WHEN decided.heartbeat_event THEN now()
                ELSE a.heartbeat_event_at END
        FROM decided
        WHERE a.id = decided.id
        RETURNING a.*, decided.previous_status, decided.active_tasks, decided.heartbeat_event
    ), recorded AS (
        INSERT INTO outbox_events (type, payload)
        SELECT e.type, e.payload FROM updated AS u, LATERAL (VALUES
            ('agent.heartbeat', CASE WHEN u.heartbeat_event THEN
                jsonb_build_object('agent_id', u.id, 'status', u.status,
                    'current_load', u.current_load, 'active_tasks', u.active_tasks,
                    'pool', u.pool)
            END),
            ('agent.status_changed', CASE WHEN u.previous_status <> u.status THEN
                jsonb_build_object('agent_id', u.id, 'status', u.status,
                    'previous_status', u.previous_status, 'current_load', u.current_load,
                    'active_tasks', u.active_tasks, 'pool', u.pool)
            END)
        ) AS e(type, payload)
        WHERE e.payload IS NOT NULL
    )
    SELECT * FROM updated
"""
_HEARTBEAT_ARGUMENTS = (
    "CAST(:ids AS uuid[])",
    "CAST(:loads AS integer[])",
    "CAST(:event_interval AS integer)",
)
_HEARTBEAT_PREPARE = "PREPARE agent_heartbeats(uuid[], integer[], integer) AS" + _HEARTBEAT_QUERY
_HEARTBEAT_EXECUTE = text(
    "SET LOCAL synchronous_commit TO OFF; "
    f"EXECUTE agent_heartbeats({', '.join(_HEARTBEAT_ARGUMENTS)})"
)
_HEARTBEAT_PLAIN = text(
    "SET LOCAL synchronous_commit TO OFF;"
    + _HEARTBEAT_QUERY.replace("$1", _HEARTBEAT_ARGUMENTS[0])
    .replace("$2", _HEARTBEAT_ARGUMENTS[1])
    .replace("$3", _HEARTBEAT_ARGUMENTS[2])
)


def heartbeat_many(db: Session, loads: Iterable[tuple[uuid.UUID, int]]) -> dict[uuid.UUID, dict]:
    """Each agent's fields after its heartbeat (`active_tasks` included), by id; an
    unknown id is left out. Given twice, an agent takes its last load."""
    loads = list(loads)
    connection = db.connection()
    statement = _HEARTBEAT_PLAIN
    if keeps_session_state(connection):
        statement = _HEARTBEAT_EXECUTE
        if "agent_heartbeats" not in connection.info:  # once per database connection
            connection.exec_driver_sql(_HEARTBEAT_PREPARE)
            connection.info["agent_heartbeats"] = True
    rows = connection.execute(
        statement,
        {
            "ids": [str(agent_id) for agent_id, _ in loads],
            "loads": [load for _, load in loads],
            "event_interval": settings_of(db).heartbeat_event_interval_seconds,
        },
    ).mappings()
    agents = {row["id"]: dict(row) for row in rows}
    if any(
        agent["status"] != agent["previous_status"] and agent["status"] != AgentStatus.BUSY
        for agent in agents.values()
    ):
        request_job(db, job_names.ASSIGN_READY_TASKS)  # back online, or room again
    return agents


def heartbeat(db: Session, *, agent_id: uuid.UUID, current_load: int) -> dict:
    """The agent's fields after the heartbeat, `active_tasks` included."""
    agent = heartbeat_many(db, [(agent_id, current_load)]).get(agent_id)
    if agent is None:
        raise AgentNotFound(f"Agent with ID {agent_id} not found")
    return agent


def refresh_statuses(db: Session, *, agent_ids: Iterable[uuid.UUID]) -> None:
    """Re-derive the status of agents whose held tasks changed. Locks them (callers lock
    tasks before agents, everywhere, so this cannot deadlock with assignment)."""
    ids = sorted(set(agent_ids))
    if not ids:
        return
    agents = db.scalars(
        select(Agent).where(Agent.id.in_(ids)).order_by(Agent.id).with_for_update()
    ).all()
    counts = held_counts(db, agent_ids=ids)
    freed = False
    for agent in agents:
        target = derive_agent_status(
            online=agent.status != AgentStatus.OFFLINE,
            held=counts[agent.id],
            max_tasks=agent.max_concurrent_tasks,
            load=agent.current_load,
        )
        previous = move_agent(agent, target)
        if previous != target:
            events.record(
                db,
                events.AGENT_STATUS_CHANGED,
                agent_id=agent.id,
                status=target,
                previous_status=previous,
                current_load=agent.current_load,
                active_tasks=counts[agent.id],
            )
        freed = freed or target in (AgentStatus.IDLE, AgentStatus.ACTIVE)
    if freed:
        request_job(db, job_names.ASSIGN_READY_TASKS)
