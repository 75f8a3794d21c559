import pytest

from shared.enums import SessionStatus, TaskStatus
from shared.errors import InvalidTransition
from shared.states import SESSION_ACTIONS, TASK_TRANSITIONS, move_session, move_task

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
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        assert TASK_TRANSITIONS[status] == frozenset()
        for target in TaskStatus:
            with pytest.raises(InvalidTransition):
                move_task(Thing(status), target)


def test_failing_a_session_is_internal_only():
    assert "fail" in SESSION_ACTIONS and "fail" not in PUBLIC_ACTIONS
