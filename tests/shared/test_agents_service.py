"""shared/services/agents.py (and the deregistration cascade) called directly, on a real
database session: registration, the status derived from held tasks and load (in Python
and in the heartbeat's SQL alike), batched heartbeats, re-derived statuses, and a
deregistered agent kept as a record that holds nothing."""

from __future__ import annotations

import itertools
import uuid

import pytest
from sqlalchemy import select

from shared import job_names
from shared.enums import AgentStatus, AgentType, Capability, TaskStatus
from shared.errors import AgentNameTaken, AgentNotFound
from shared.models import Agent, OutboxEvent, Task
from shared.services import agents, assignment, cascades, sessions, task_creation
from shared.states import derive_agent_status


def agent(db, name, *, max_tasks=2, capabilities=(Capability.CODE_GENERATION,)) -> Agent:
    registered = agents.register(
        db,
        name=name,
        type=AgentType.BACKEND,
        capabilities=list(capabilities),
        max_concurrent_tasks=max_tasks,
    )
    db.flush()
    return registered


def holding(db, holder: Agent, count: int) -> list[Task]:
    """`count` tasks assigned to `holder`."""
    work_session = sessions.create(db, title="work")
    db.flush()
    sessions.apply_action(db, session_id=work_session.id, action="start")
    held = []
    for _ in range(count):
        created = task_creation.create(db, session_id=work_session.id, title="t")
        db.flush()
        assignment.assign_one(db, task_id=created.id, agent_id=holder.id)
        held.append(created)
    return held


def mark_offline(db, expired: Agent) -> None:
    """As the heartbeat-expiry sweep leaves an agent (tests/shared/test_sweeps.py)."""
    db.execute(Agent.__table__.update().where(Agent.id == expired.id).values(status="OFFLINE"))
    db.expire_all()


def events_of(db, kind: str) -> list[dict]:
    query = select(OutboxEvent.payload).where(OutboxEvent.type == kind).order_by(OutboxEvent.id)
    return list(db.scalars(query))


@pytest.mark.parametrize(
    ("online", "held", "max_tasks", "load", "status"),
    [
        (False, 0, 2, 0, AgentStatus.OFFLINE),
        (False, 2, 2, 100, AgentStatus.OFFLINE),
        (True, 0, 2, 0, AgentStatus.IDLE),
        (True, 1, 2, 0, AgentStatus.ACTIVE),
        (True, 2, 2, 0, AgentStatus.BUSY),
        (True, 0, 2, 100, AgentStatus.BUSY),
        (True, 0, 2, 99, AgentStatus.IDLE),
    ],
)
def test_derive_status(online, held, max_tasks, load, status):
    assert derive_agent_status(online=online, held=held, max_tasks=max_tasks, load=load) == status


def test_the_heartbeat_statement_derives_the_same_status_as_python(db):
    """Every combination of held tasks and load, through the heartbeat's SQL."""
    max_tasks = 2
    cases = list(itertools.product(range(max_tasks + 1), (0, 50, 99, 100)))
    loads = []
    expected = {}
    for n, (held, load) in enumerate(cases):
        sampled = agent(db, f"agent-{n}", max_tasks=max_tasks)
        holding(db, sampled, held)
        loads.append((sampled.id, load))
        expected[sampled.id] = derive_agent_status(
            online=True, held=held, max_tasks=max_tasks, load=load
        )

    answered = agents.heartbeat_many(db, loads)

    assert {agent_id: row["status"] for agent_id, row in answered.items()} == expected
    assert {agent_id: row["active_tasks"] for agent_id, row in answered.items()} == {
        agent_id: held for (agent_id, _), (held, _) in zip(loads, cases, strict=True)
    }


def test_heartbeat_many_takes_each_agents_last_load_and_leaves_out_unknown_ones(db):
    first, second = agent(db, "first"), agent(db, "second")
    gone = agent(db, "gone")
    cascades.deregister_agent(db, agent_id=gone.id)
    unknown = uuid.uuid4()

    answered = agents.heartbeat_many(
        db, [(first.id, 10), (second.id, 100), (first.id, 30), (unknown, 5), (gone.id, 5)]
    )

    assert set(answered) == {first.id, second.id}
    assert answered[first.id]["current_load"] == 30
    assert (answered[second.id]["status"], answered[second.id]["previous_status"]) == (
        AgentStatus.BUSY,
        AgentStatus.IDLE,
    )
    db.expire_all()
    assert db.get(Agent, second.id).status == AgentStatus.BUSY
    assert sorted(e["agent_id"] for e in events_of(db, "agent.heartbeat")) == sorted(
        [str(first.id), str(second.id)]
    )
    changed = events_of(db, "agent.status_changed")
    assert [(e["agent_id"], e["status"]) for e in changed] == [(str(second.id), "BUSY")]


def test_heartbeat_of_an_unknown_agent_is_not_found(db):
    gone = agent(db, "gone")
    cascades.deregister_agent(db, agent_id=gone.id)
    with pytest.raises(AgentNotFound):
        agents.heartbeat(db, agent_id=gone.id, current_load=0)


def test_a_heartbeat_that_frees_room_asks_for_assignment(db, sent_jobs):
    loaded = agent(db, "loaded")
    agents.heartbeat(db, agent_id=loaded.id, current_load=100)
    db.commit()
    sent_jobs.clear()

    agents.heartbeat(db, agent_id=loaded.id, current_load=100)  # still busy
    db.commit()
    assert sent_jobs == []
    assert agents.heartbeat(db, agent_id=loaded.id, current_load=20)["status"] == "IDLE"
    db.commit()
    assert sent_jobs == [job_names.ASSIGN_READY_TASKS]


def test_refresh_statuses_rederives_from_held_tasks(db, sent_jobs):
    holder, offline = agent(db, "holder"), agent(db, "offline")
    tasks = holding(db, holder, 2)
    mark_offline(db, offline)
    # A bulk path moved one of the held tasks without re-deriving the agent's status.
    db.execute(
        Task.__table__.update().where(Task.id == tasks[0].id).values(status=TaskStatus.CANCELLED)
    )
    db.commit()
    db.expire_all()
    sent_jobs.clear()

    agents.refresh_statuses(db, agent_ids=[holder.id, offline.id, holder.id])
    db.commit()
    db.expire_all()

    assert db.get(Agent, holder.id).status == AgentStatus.ACTIVE  # 1 of 2, was BUSY
    assert db.get(Agent, offline.id).status == AgentStatus.OFFLINE  # stays offline
    [changed] = events_of(db, "agent.status_changed")[-1:]
    assert (changed["agent_id"], changed["previous_status"], changed["status"]) == (
        str(holder.id),
        "BUSY",
        "ACTIVE",
    )
    assert sent_jobs == [job_names.ASSIGN_READY_TASKS]  # room again


def test_held_counts_count_only_assigned_and_in_progress_tasks(db):
    holder, idle = agent(db, "holder", max_tasks=3), agent(db, "idle")
    tasks = holding(db, holder, 3)
    db.execute(
        Task.__table__.update().where(Task.id == tasks[0].id).values(status=TaskStatus.COMPLETED)
    )
    db.execute(
        Task.__table__.update().where(Task.id == tasks[1].id).values(status=TaskStatus.IN_PROGRESS)
    )

    assert agents.held_counts(db, agent_ids=[holder.id, idle.id]) == {holder.id: 2, idle.id: 0}
    assert agents.held_counts(db, agent_ids=[]) == {}


def test_a_name_is_taken_once_and_the_session_goes_on(db):
    agent(db, "unique")
    with pytest.raises(AgentNameTaken):
        agent(db, "unique")
    assert agent(db, "another").name == "another"  # the failed insert rolled back alone


def test_deregister_keeps_the_record_and_gives_back_its_tasks(db):
    leaving = agent(db, "leaving", max_tasks=2)
    tasks = holding(db, leaving, 2)

    cascades.deregister_agent(db, agent_id=leaving.id)
    db.flush()
    db.expire_all()

    record = db.get(Agent, leaving.id)
    assert record.deregistered_at is not None and record.status == AgentStatus.OFFLINE
    for given_back in tasks:
        given_back = db.get(Task, given_back.id)
        assert (given_back.status, given_back.assigned_agent_id) == (TaskStatus.PENDING, None)
        assert given_back.attempts == 1
    assert agents.held_counts(db, agent_ids=[leaving.id]) == {leaving.id: 0}
    assert [a.id for a in agents.list_agents(db).items] == []
    assert [a.id for a in agents.list_agents(db, include_deregistered=True).items] == [leaving.id]
    assert agents.get_or_raise(db, agent_id=leaving.id).id == leaving.id  # still readable
    with pytest.raises(AgentNotFound):
        agents.get_live_or_raise(db, agent_id=leaving.id)
    with pytest.raises(AgentNotFound):
        cascades.deregister_agent(db, agent_id=leaving.id)
    assert agent(db, "leaving").id != leaving.id  # the name is free again


def test_list_agents_available_only_means_online_with_room(db):
    idle, active = agent(db, "idle"), agent(db, "active")
    full, loaded, offline = agent(db, "full", max_tasks=1), agent(db, "loaded"), agent(db, "off")
    holding(db, active, 1)
    holding(db, full, 1)
    agents.heartbeat(db, agent_id=loaded.id, current_load=100)
    mark_offline(db, offline)

    available = agents.list_agents(db, available_only=True, page_size=100).items

    assert {a.name for a in available} == {idle.name, active.name}
    statuses = {a.name: a.status for a in agents.list_agents(db, page_size=100).items}
    assert statuses == {
        "idle": AgentStatus.IDLE,
        "active": AgentStatus.ACTIVE,
        "full": AgentStatus.BUSY,
        "loaded": AgentStatus.BUSY,
        "off": AgentStatus.OFFLINE,
    }
