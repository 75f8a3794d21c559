"""shared/services/assignment.py called directly, on a real database session: which task
goes to which agent (capability, pool, capacity, least loaded first), in which order
(session priority, then age), and that a task nobody can take holds back no other."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from shared.enums import AgentStatus, AgentType, Capability, Priority, TaskStatus
from shared.errors import AgentUnavailable, InvalidTransition
from shared.models import Agent, OutboxEvent, Task
from shared.models.types import utcnow
from shared.pools import DEFAULT_POOL
from shared.services import agents, assignment, sessions, task_creation, task_lifecycle

CODE = Capability.CODE_GENERATION
TESTS = Capability.TESTING


def running_session(db, *, priority=Priority.MEDIUM, pool=DEFAULT_POOL):
    work_session = sessions.create(db, title="work", priority=priority, pool=pool)
    db.flush()
    return sessions.apply_action(db, session_id=work_session.id, action="start")


def agent(db, name, *capabilities, max_tasks=2, pool=DEFAULT_POOL) -> Agent:
    registered = agents.register(
        db,
        name=name,
        type=AgentType.BACKEND,
        capabilities=list(capabilities or [CODE]),
        max_concurrent_tasks=max_tasks,
        pool=pool,
    )
    db.flush()
    return registered


def task(db, work_session, *capabilities, age_seconds: float = 0) -> Task:
    created = task_creation.create(
        db,
        session_id=work_session.id,
        title="t",
        required_capabilities=list(capabilities or [CODE]),
    )
    created.created_at = utcnow() - timedelta(seconds=age_seconds)
    db.flush()
    return created


def holder_of(db, task_id):
    return db.scalar(select(Task.assigned_agent_id).where(Task.id == task_id))


def test_a_task_goes_to_an_agent_with_its_capabilities_in_its_pool(db):
    work, red_work = running_session(db), running_session(db, pool="red")
    coder, tester = agent(db, "coder", CODE), agent(db, "tester", TESTS)
    red_coder = agent(db, "red-coder", CODE, pool="red")
    code_task, test_task, red_task = task(db, work, CODE), task(db, work, TESTS), task(db, red_work)
    both = task(db, work, CODE, TESTS)  # nobody has both

    pairs = dict(assignment.assign_ready(db))

    assert pairs == {code_task.id: coder.id, test_task.id: tester.id, red_task.id: red_coder.id}
    db.expire_all()
    assert db.get(Task, code_task.id).status == TaskStatus.ASSIGNED
    assert db.get(Task, both.id).status == TaskStatus.PENDING


def test_no_agent_takes_more_than_its_capacity(db):
    work = running_session(db)
    small, large = agent(db, "small", max_tasks=1), agent(db, "large", max_tasks=3)
    tasks = [task(db, work, age_seconds=10 - i) for i in range(6)]

    pairs = assignment.assign_ready(db)

    taken = [agent_id for _, agent_id in pairs]
    assert (taken.count(small.id), taken.count(large.id), len(pairs)) == (1, 3, 4)
    assert agents.held_counts(db, agent_ids=[small.id, large.id]) == {small.id: 1, large.id: 3}
    assert {holder_of(db, t.id) for t in tasks[4:]} == {None}  # the newest two wait
    db.expire_all()
    assert (db.get(Agent, small.id).status, db.get(Agent, large.id).status) == (
        AgentStatus.BUSY,
        AgentStatus.BUSY,
    )


def test_the_least_loaded_agent_is_chosen_first(db):
    work = running_session(db)
    busy, free = agent(db, "busy", max_tasks=4), agent(db, "free", max_tasks=4)
    first = task(db, work, age_seconds=5)
    assert assignment.assign_one(db, task_id=first.id, agent_id=busy.id)

    second = task(db, work)
    assert assignment.assign_ready(db) == [(second.id, free.id)]  # 0 of 4 before 1 of 4


def test_load_is_a_share_of_capacity_then_the_reported_load(db):
    work = running_session(db)
    half, quarter = agent(db, "half", max_tasks=2), agent(db, "quarter", max_tasks=4)
    for holder in (half, quarter):
        assignment.assign_one(db, task_id=task(db, work, age_seconds=5).id, agent_id=holder.id)
    share = task(db, work, age_seconds=4)
    assert assignment.assign_ready(db) == [(share.id, quarter.id)]  # 1 of 4 before 1 of 2

    calm, hectic = agent(db, "calm", max_tasks=4), agent(db, "hectic", max_tasks=4)
    agents.heartbeat_many(db, [(calm.id, 10), (hectic.id, 60)])
    tie = task(db, work)
    assert assignment.assign_ready(db) == [(tie.id, calm.id)]  # both 0 of 4: load 10 first


def test_an_agent_at_full_load_takes_nothing(db):
    work = running_session(db)
    loaded = agent(db, "loaded")
    agents.heartbeat(db, agent_id=loaded.id, current_load=100)
    pending = task(db, work)

    assert assignment.assign_ready(db) == []
    assert holder_of(db, pending.id) is None
    agents.heartbeat(db, agent_id=loaded.id, current_load=99)
    assert assignment.assign_ready(db) == [(pending.id, loaded.id)]


def test_session_priority_first_then_the_oldest_task(db):
    low, high = (
        running_session(db, priority=Priority.LOW),
        running_session(db, priority=Priority.HIGH),
    )
    oldest_low = task(db, low, age_seconds=300)
    older_high, newer_high = task(db, high, age_seconds=20), task(db, high, age_seconds=10)
    single = agent(db, "single", max_tasks=1)

    order = []
    for _ in range(3):
        [(task_id, _)] = assignment.assign_ready(db)
        order.append(task_id)
        task_lifecycle.start(db, task_id=task_id, agent_id=single.id)
        task_lifecycle.complete(db, task_id=task_id, agent_id=single.id)  # room for the next
        db.flush()

    assert order == [older_high.id, newer_high.id, oldest_low.id]


def test_tasks_nobody_can_take_do_not_hold_back_the_ones_behind_them(db):
    work = running_session(db)
    agent(db, "coder", CODE)
    for age in range(100, 103):  # older, but no agent has DEPLOYMENT
        task(db, work, Capability.DEPLOYMENT, age_seconds=age)
    placeable = task(db, work, CODE)

    assert [task_id for task_id, _ in assignment.assign_ready(db, limit=1)] == [placeable.id]


def test_tasks_of_a_session_not_running_are_not_assigned(db):
    work = running_session(db)
    agent(db, "coder")
    waiting = task(db, work)
    sessions.apply_action(db, session_id=work.id, action="pause")
    db.flush()

    assert assignment.assign_ready(db) == []
    with pytest.raises(InvalidTransition):
        assignment.assign_one(db, task_id=waiting.id)


def test_assign_one_names_the_agent_or_picks_the_best(db):
    work = running_session(db)
    coder, tester = agent(db, "coder", CODE, max_tasks=1), agent(db, "tester", TESTS)
    first, second = task(db, work), task(db, work)

    with pytest.raises(AgentUnavailable):
        assignment.assign_one(db, task_id=first.id, agent_id=tester.id)  # no CODE_GENERATION
    assert assignment.assign_one(db, task_id=first.id).assigned_agent_id == coder.id
    with pytest.raises(AgentUnavailable):
        assignment.assign_one(db, task_id=second.id)  # the only coder is full
    with pytest.raises(InvalidTransition):
        assignment.assign_one(db, task_id=first.id)  # assigned already
    assert holder_of(db, second.id) is None


def test_an_assignment_records_its_events(db):
    work = running_session(db)
    single = agent(db, "single", max_tasks=1)
    pending = task(db, work)
    db.execute(OutboxEvent.__table__.delete())

    assignment.assign_ready(db)

    recorded = [
        (e.type, e.payload) for e in db.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
    ]
    by_type = {kind: payload for kind, payload in recorded}
    assert by_type["task.assigned"]["task_id"] == str(pending.id)
    assert by_type["task.assigned"]["agent_id"] == str(single.id)
    assert by_type["task.status_changed"]["previous_status"] == TaskStatus.PENDING
    assert by_type["agent.status_changed"]["status"] == AgentStatus.BUSY
    assert by_type["agent.status_changed"]["previous_status"] == AgentStatus.IDLE
