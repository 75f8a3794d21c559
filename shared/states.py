"""The state machines: one table per entity (ARCHITECTURE, "State machines in one place").

Sessions and tasks move by named actions: each action lists the statuses it starts from
and the status it leads to. The Python checks (`session_target`, `task_action`) and the
SQL of the bulk paths (`task_sources`, `agent_status_sql`) are derived from these tables,
so changing a rule here changes it everywhere. Services change a status column only
through `move_session`, `move_task`, `move_agent` or a bulk statement built from
`task_sources` and the action's target.

An agent's status is not moved by actions: it is derived from whether it is online, how
many tasks it holds and the load it reports (`derive_agent_status`, and the same rule in
SQL, `agent_status_sql`).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import ColumnElement, and_, case, literal, not_

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
TASK_ACTIONS: dict[str, tuple[frozenset[TaskStatus], TaskStatus]] = {
    # Its dependencies all completed: a waiting task becomes ready.
    "release": (frozenset({T.BLOCKED}), T.PENDING),
    "assign": (frozenset({T.PENDING}), T.ASSIGNED),
    "start": (frozenset({T.ASSIGNED}), T.IN_PROGRESS),
    # Not a move: an agent reports progress on the task it runs.
    "report progress on": (frozenset({T.IN_PROGRESS}), T.IN_PROGRESS),
    "complete": (frozenset({T.IN_PROGRESS}), T.COMPLETED),
    # A held task taken back (retryable failure, agent gone, timeout): offered again.
    "retry": (frozenset({T.ASSIGNED, T.IN_PROGRESS}), T.PENDING),
    "fail": (frozenset({T.ASSIGNED, T.IN_PROGRESS}), T.FAILED),
    "cancel": (frozenset({T.BLOCKED, T.PENDING, T.ASSIGNED, T.IN_PROGRESS}), T.CANCELLED),
    # A task with subtasks is never assigned: its status follows them.
    "follow started subtasks": (frozenset({T.PENDING}), T.IN_PROGRESS),
    "follow requeued subtasks": (frozenset({T.IN_PROGRESS}), T.PENDING),
    "follow completed subtasks": (frozenset({T.IN_PROGRESS}), T.COMPLETED),
    "follow a failed subtask": (frozenset({T.PENDING, T.IN_PROGRESS}), T.FAILED),
}

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    status: frozenset(
        target
        for sources, target in TASK_ACTIONS.values()
        if status in sources and target != status
    )
    for status in TaskStatus
}
# The tasks an agent holds: those it may fail or be taken back from.
HELD_TASK_STATUSES: frozenset[TaskStatus] = TASK_ACTIONS["retry"][0]
# No move leaves these.
FINISHED_TASK_STATUSES = frozenset(s for s, targets in TASK_TRANSITIONS.items() if not targets)
UNFINISHED_TASK_STATUSES = frozenset(TaskStatus) - FINISHED_TASK_STATUSES

A = AgentStatus
AGENT_TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    A.IDLE: frozenset({A.ACTIVE, A.BUSY, A.OFFLINE}),
    A.ACTIVE: frozenset({A.IDLE, A.BUSY, A.OFFLINE}),
    A.BUSY: frozenset({A.IDLE, A.ACTIVE, A.OFFLINE}),
    A.OFFLINE: frozenset({A.IDLE, A.ACTIVE, A.BUSY}),
}

# A reported load at or above this leaves an agent no room, whatever it holds.
FULL_LOAD = 100
# The statuses of online agents with room for another task (see derive_agent_status).
AGENT_STATUSES_WITH_ROOM = frozenset({A.IDLE, A.ACTIVE})


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


def task_sources(action: str) -> list[TaskStatus]:
    """The statuses `action` starts from, sorted: the `WHERE status IN ...` of bulk moves."""
    return sorted(TASK_ACTIONS[action][0])


def task_target(action: str) -> TaskStatus:
    return TASK_ACTIONS[action][1]


def task_action(current: TaskStatus | str, action: str) -> TaskStatus:
    """The status `action` leads to from `current`, or InvalidTransition."""
    sources, target = TASK_ACTIONS[action]
    if current not in sources:
        raise InvalidTransition(f"Cannot {action} a task that is {current}")
    return target


def move_task(task: _HasStatus, action: str) -> TaskStatus:
    """Apply a task action; returns the previous status."""
    previous = TaskStatus(task.status)
    task.status = task_action(previous, action)
    return previous


def follow_action(current: TaskStatus, target: TaskStatus) -> str | None:
    """The action by which a task with subtasks moves from `current` to `target`."""
    for action, (sources, to) in TASK_ACTIONS.items():
        if action.startswith("follow") and current in sources and to == target:
            return action
    if target == T.CANCELLED and current in TASK_ACTIONS["cancel"][0]:
        return "cancel"
    return None


def move_agent(agent: _HasStatus, target: AgentStatus) -> AgentStatus:
    previous = AgentStatus(agent.status)
    if previous == target:
        return previous
    if target not in AGENT_TRANSITIONS[previous]:
        raise InvalidTransition(f"Cannot move an agent from {previous} to {target}")
    agent.status = target
    return previous


def agent_statuses_moving_to(target: AgentStatus) -> list[AgentStatus]:
    return sorted(s for s, targets in AGENT_TRANSITIONS.items() if target in targets)


def has_room(*, held: int, max_tasks: int, load: int) -> bool:
    """Whether an online agent can take another task."""
    return held < max_tasks and load < FULL_LOAD


def has_room_sql(held, max_tasks, load) -> ColumnElement[bool]:
    """`has_room` as a SQL expression over columns or expressions."""
    return and_(held < max_tasks, load < FULL_LOAD)


def derive_agent_status(*, online: bool, held: int, max_tasks: int, load: int) -> AgentStatus:
    if not online:
        return A.OFFLINE
    if not has_room(held=held, max_tasks=max_tasks, load=load):
        return A.BUSY
    return A.ACTIVE if held else A.IDLE


def agent_status_sql(held, max_tasks, load) -> ColumnElement[str]:
    """`derive_agent_status` of an online agent, as a SQL expression."""
    return case(
        (not_(has_room_sql(held, max_tasks, load)), literal(A.BUSY.value)),
        (held > 0, literal(A.ACTIVE.value)),
        else_=literal(A.IDLE.value),
    )
