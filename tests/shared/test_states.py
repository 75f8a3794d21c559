import itertools

import pytest
from sqlalchemy import literal, select

from shared.enums import AgentStatus, SessionStatus, TaskStatus
from shared.errors import InvalidTransition
from shared.states import (
    FINISHED_TASK_STATUSES,
    HELD_TASK_STATUSES,
    SESSION_ACTIONS,
    TASK_ACTIONS,
    TASK_TRANSITIONS,
    agent_status_sql,
    derive_agent_status,
    has_room,
    has_room_sql,
    move_session,
    move_task,
    task_sources,
)

PUBLIC_ACTIONS = ["start", "pause", "resume", "cancel", "complete"]
EXPECTED_SESSION_MOVES = {
    ("PENDING", "start"): "RUNNING",
    ("RUNNING", "pause"): "PAUSED",
    ("PAUSED", "resume"): "RUNNING",
    ("PENDING", "cancel"): "CANCELLED",
    ("RUNNING", "cancel"): "CANCELLED",
    ("PAUSED", "cancel"): "CANCELLED",
    ("RUNNING", "complete"): "COMPLETED",
}


class Thing:
    def __init__(self, status):
        self.status = status


@pytest.mark.parametrize("status", list(SessionStatus))
@pytest.mark.parametrize("action", PUBLIC_ACTIONS)
def test_every_session_pair(status, action):
    thing = Thing(status)
    expected = EXPECTED_SESSION_MOVES.get((status.value, action))
    if expected is None:
        with pytest.raises(InvalidTransition) as excinfo:
            move_session(thing, action)
        assert status.value in excinfo.value.message and action in excinfo.value.message
        assert thing.status == status
    else:
        assert move_session(thing, action) == status
        assert thing.status == expected


def test_finished_tasks_never_move():
    assert {"COMPLETED", "FAILED", "CANCELLED"} == FINISHED_TASK_STATUSES
    for status in FINISHED_TASK_STATUSES:
        assert TASK_TRANSITIONS[status] == frozenset()
        for action in TASK_ACTIONS:
            with pytest.raises(InvalidTransition) as excinfo:
                move_task(Thing(status), action)
            assert status in excinfo.value.message


EXPECTED_TASK_MOVES = {
    "BLOCKED": {"release": "PENDING", "cancel": "CANCELLED"},
    "PENDING": {
        "assign": "ASSIGNED",
        "cancel": "CANCELLED",
        "follow started subtasks": "IN_PROGRESS",
        "follow a failed subtask": "FAILED",
    },
    "ASSIGNED": {
        "start": "IN_PROGRESS",
        "retry": "PENDING",
        "fail": "FAILED",
        "cancel": "CANCELLED",
    },
    "IN_PROGRESS": {
        "report progress on": "IN_PROGRESS",
        "complete": "COMPLETED",
        "retry": "PENDING",
        "fail": "FAILED",
        "cancel": "CANCELLED",
        "follow requeued subtasks": "PENDING",
        "follow completed subtasks": "COMPLETED",
        "follow a failed subtask": "FAILED",
    },
}


@pytest.mark.parametrize("status", list(TaskStatus))
@pytest.mark.parametrize("action", list(TASK_ACTIONS))
def test_every_task_pair(status, action):
    thing = Thing(status)
    expected = EXPECTED_TASK_MOVES.get(status.value, {}).get(action)
    if expected is None:
        with pytest.raises(InvalidTransition):
            move_task(thing, action)
        assert thing.status == status
    else:
        assert move_task(thing, action) == status
        assert thing.status == expected


def test_the_transitions_and_bulk_sources_are_derived_from_the_actions():
    moves = {
        (status, target)
        for status, actions in EXPECTED_TASK_MOVES.items()
        for target in actions.values()
        if target != status
    }
    assert {(s, t) for s, targets in TASK_TRANSITIONS.items() for t in targets} == moves
    assert task_sources("cancel") == ["ASSIGNED", "BLOCKED", "IN_PROGRESS", "PENDING"]
    assert {"ASSIGNED", "IN_PROGRESS"} == HELD_TASK_STATUSES


GRID = list(itertools.product([0, 1, 2, 3], [1, 3], [0, 50, 99, 100, 120]))


def test_has_room_and_the_agent_status_agree_in_python_and_sql(db):
    """The assignment and heartbeat statements use the SQL forms: they must not drift."""
    for held, max_tasks, load in GRID:
        row = db.execute(
            select(
                has_room_sql(literal(held), literal(max_tasks), literal(load)),
                agent_status_sql(literal(held), literal(max_tasks), literal(load)),
            )
        ).one()
        assert row[0] == has_room(held=held, max_tasks=max_tasks, load=load)
        assert row[1] == derive_agent_status(online=True, held=held, max_tasks=max_tasks, load=load)
    assert derive_agent_status(online=False, held=0, max_tasks=1, load=0) == AgentStatus.OFFLINE


def test_failing_a_session_is_internal_only():
    assert "fail" in SESSION_ACTIONS and "fail" not in PUBLIC_ACTIONS
