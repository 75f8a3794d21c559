"""The state machines: one table of allowed moves per entity (ARCHITECTURE principle 3).

Services call `move_*` to change a status column; nothing else writes one.
"""

from __future__ import annotations

from typing import Protocol

from shared.enums import AgentStatus, SessionStatus, TaskStatus
from shared.errors import InvalidTransition

S = SessionStatus
SESSION_ACTIONS: dict[str, tuple[frozenset[SessionStatus], SessionStatus]] = {
    "start": (frozenset({S.PENDING}), S.RUNNING),
    "pause": (frozenset({S.RUNNING}), S.PAUSED),
    "resume": (frozenset({S.PAUSED}), S.RUNNING),
    "cancel": (frozenset({S.PENDING, S.RUNNING, S.PAUSED}), S.CANCELLED),
    "complete": (frozenset({S.RUNNING}), S.COMPLETED),
    # Not a public action: a task that fails for good fails its session.
    "fail": (frozenset({S.PENDING, S.RUNNING, S.PAUSED}), S.FAILED),
}

T = TaskStatus
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.BLOCKED: frozenset({T.PENDING, T.CANCELLED}),
    # PENDING -> IN_PROGRESS / FAILED: a task with subtasks follows them, never assigned.
    T.PENDING: frozenset({T.ASSIGNED, T.CANCELLED, T.IN_PROGRESS, T.FAILED}),
    T.ASSIGNED: frozenset({T.IN_PROGRESS, T.PENDING, T.FAILED, T.CANCELLED}),
    T.IN_PROGRESS: frozenset({T.COMPLETED, T.PENDING, T.FAILED, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}

A = AgentStatus
AGENT_TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    A.IDLE: frozenset({A.ACTIVE, A.BUSY, A.OFFLINE}),
    A.ACTIVE: frozenset({A.IDLE, A.BUSY, A.OFFLINE}),
    A.BUSY: frozenset({A.IDLE, A.ACTIVE, A.OFFLINE}),
    A.OFFLINE: frozenset({A.IDLE, A.ACTIVE, A.BUSY}),
}


class _HasStatus(Protocol):
    status: str


def session_target(current: SessionStatus, action: str) -> SessionStatus:
    allowed_from, target = SESSION_ACTIONS[action]
    if current not in allowed_from:
        raise InvalidTransition(f"Cannot {action} a session that is {current}")
    return target


def move_session(session: _HasStatus, action: str) -> SessionStatus:
    """Apply a session action; returns the previous status."""
    previous = SessionStatus(session.status)
    session.status = session_target(previous, action)
    return previous


def can_move_task(current: TaskStatus, target: TaskStatus) -> bool:
    return target in TASK_TRANSITIONS[current]


def task_statuses_moving_to(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses a task may leave for `target`: the `WHERE status IN ...` of the bulk
    moves, so that SQL and the table above cannot disagree."""
    return frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)


def move_task(task: _HasStatus, target: TaskStatus, *, action: str | None = None) -> TaskStatus:
    """Move a task to `target`; returns the previous status."""
    previous = TaskStatus(task.status)
    if not can_move_task(previous, target):
        what = action or f"move to {target}"
        raise InvalidTransition(f"Cannot {what} a task that is {previous}")
    task.status = target
    return previous


def move_agent(agent: _HasStatus, target: AgentStatus) -> AgentStatus:
    previous = AgentStatus(agent.status)
    if previous == target:
        return previous
    if target not in AGENT_TRANSITIONS[previous]:
        raise InvalidTransition(f"Cannot move an agent from {previous} to {target}")
    agent.status = target
    return previous
