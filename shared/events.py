"""Event types and the outbox (CONTRACT section 9).

`record` writes the event in the caller's transaction; publishing to Redis happens after
the commit (see the live-events issue), so no event is seen for a change that rolled back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from shared.models import OutboxEvent

SESSION_CREATED = "session.created"
SESSION_STATUS_CHANGED = "session.status_changed"
TASK_CREATED = "task.created"
TASK_STATUS_CHANGED = "task.status_changed"
TASK_ASSIGNED = "task.assigned"
TASK_DECOMPOSED = "task.decomposed"
AGENT_REGISTERED = "agent.registered"
AGENT_STATUS_CHANGED = "agent.status_changed"
AGENT_HEARTBEAT = "agent.heartbeat"
AGENT_DEREGISTERED = "agent.deregistered"
SYSTEM_HEALTH = "system.health"


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
    session.add(OutboxEvent(type=event_type, payload=_jsonable(payload)))


def record_many(session: Session, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Many events in one INSERT (the assignment job records hundreds at once)."""
    if events:
        session.execute(
            OutboxEvent.__table__.insert(),
            [{"type": t, "payload": _jsonable(p)} for t, p in events],
        )
