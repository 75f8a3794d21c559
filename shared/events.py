"""Event types and the outbox (CONTRACT section 9).

`record` writes the event in the caller's transaction; publishing to Redis happens after
the commit (see the live-events issue), so no event is seen for a change that rolled back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import OutboxEvent
from shared.pools import known_pools

SESSION_CREATED = "session.created"
SESSION_STATUS_CHANGED = "session.status_changed"
TASK_CREATED = "task.created"
TASK_STATUS_CHANGED = "task.status_changed"
TASK_ASSIGNED = "task.assigned"
TASK_DECOMPOSED = "task.decomposed"
TASK_LOG = "task.log"
AGENT_REGISTERED = "agent.registered"
AGENT_STATUS_CHANGED = "agent.status_changed"
AGENT_HEARTBEAT = "agent.heartbeat"
AGENT_DEREGISTERED = "agent.deregistered"
SYSTEM_HEALTH = "system.health"
# A webhook disabled after WEBHOOK_DISABLE_AFTER_FAILURES consecutive failed attempts.
WEBHOOK_DISABLED = "webhook.disabled"
# Sent by POST /webhooks/{id}/test, delivered to that webhook only.
WEBHOOK_TEST = "webhook.test"

# What webhooks may subscribe to: the outbox's events (system.health is made by each web
# process for its sockets, never stored, so no webhook could get it).
WEBHOOK_EVENT_TYPES = (
    SESSION_CREATED,
    SESSION_STATUS_CHANGED,
    TASK_CREATED,
    TASK_STATUS_CHANGED,
    TASK_ASSIGNED,
    TASK_DECOMPOSED,
    AGENT_REGISTERED,
    AGENT_STATUS_CHANGED,
    AGENT_HEARTBEAT,
    AGENT_DEREGISTERED,
    WEBHOOK_DISABLED,
)
WEBHOOK_WILDCARDS = ("*", *sorted({f"{t.split('.')[0]}.*" for t in WEBHOOK_EVENT_TYPES}))


def message(seq: int, event_type: str, payload: dict, created_at: datetime) -> dict:
    """An event as clients get it: on the streams, in histories, in webhook bodies."""
    timestamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"id": str(seq), "type": event_type, "payload": payload, "timestamp": timestamp}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def record(session: Session, event_type: str, **payload: Any) -> None:
    _add_pools(session, [(event_type, payload)])
    session.add(OutboxEvent(type=event_type, payload=_jsonable(payload)))


def record_many(session: Session, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Many events in one INSERT (the assignment job records hundreds at once)."""
    if events:
        _add_pools(session, events)
        session.execute(
            OutboxEvent.__table__.insert(),
            [{"type": t, "payload": _jsonable(p)} for t, p in events],
        )


def _add_pools(session: Session, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Every session, task and agent event carries its pool (the session's, or the
    agent's), so streams can be filtered by pool: looked up here, in one place."""
    from shared.models import Agent, WorkSession

    wanted: dict[type, set] = {WorkSession: set(), Agent: set()}
    for event_type, payload in events:
        if "pool" not in payload:
            key = _pool_key(event_type, payload)
            if key is not None and known_pools.get(key) is None:
                wanted[key[0]].add(key[1])
    for model, ids in wanted.items():
        if ids:
            rows = session.execute(select(model.id, model.pool).where(model.id.in_(ids)))
            for row_id, pool in rows:
                known_pools.remember((model, _uuid(row_id)), pool)
    for event_type, payload in events:
        if "pool" not in payload:
            key = _pool_key(event_type, payload)
            pool = known_pools.get(key) if key is not None else None
            if pool is not None:
                payload["pool"] = pool


def _pool_key(event_type: str, payload: dict[str, Any]):
    from shared.models import Agent, WorkSession

    if event_type.startswith(("session.", "task.")) and payload.get("session_id"):
        return WorkSession, _uuid(payload["session_id"])
    if event_type.startswith("agent.") and payload.get("agent_id"):
        return Agent, _uuid(payload["agent_id"])
    return None


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
