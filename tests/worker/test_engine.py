"""The engine through a real Celery worker: the API persists and enqueues, the worker
decomposes and assigns, and sweeps repair what a lost job left."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import func, select, text

from shared.models import OutboxEvent, Task
from shared.templates import TEMPLATES
from tests.api.helpers import act, assert_error, make_session, make_task, register, start_session
from tests.support.waiting import wait_for


def status_of(api, task_id):
    return api.get(f"/api/v1/tasks/{task_id}").json["status"]


def held_by(api, agent_id):
    return api.get(f"/api/v1/agents/{agent_id}/tasks").json["items"]


@pytest.mark.parametrize("template", [t.value for t in TEMPLATES])
def test_each_template_becomes_its_dag(api, template):
    session = start_session(api)
    parent = make_task(api, session["id"], title="Payments")
    response = act(api, parent["id"], "decompose", {"template": template.lower()})
    assert response.status_code == 202
    assert response.json["decomposition_template"] == template
    subtask_ids = wait_for(lambda: api.get(f"/api/v1/tasks/{parent['id']}").json["subtasks"])
    steps = TEMPLATES[template]
    assert len(subtask_ids) == len(steps)
    subtasks = {t["id"]: t for t in (api.get(f"/api/v1/tasks/{i}").json for i in subtask_ids)}
    by_title = {t["title"]: t for t in subtasks.values()}
    for step in steps:
        subtask = by_title[f"{step.title}: Payments"]
        assert subtask["parent_id"] == parent["id"]
        assert subtask["required_capabilities"] == [c.value for c in step.capabilities]
        expected_deps = {
            by_title[f"{s.title}: Payments"]["id"] for s in steps if s.key in step.depends_on
        }
        assert set(subtask["depends_on"]) == expected_deps
        assert subtask["status"] == ("BLOCKED" if step.depends_on else "PENDING")


def test_decompose_refusals_send_no_job(api, db):
    session = start_session(api)
    task = make_task(api, session["id"])
    assert_error(act(api, task["id"], "decompose", {"template": "ROCKET"}), 400, "VALIDATION_ERROR")
    assert_error(act(api, task["id"], "decompose", {}), 400, "VALIDATION_ERROR")
    assert_error(
        act(api, str(uuid.uuid4()), "decompose", {"template": "CRUD"}), 404, "TASK_NOT_FOUND"
    )
    assert act(api, task["id"], "decompose", {"template": "CRUD"}).status_code == 202
    assert_error(act(api, task["id"], "decompose", {"template": "UI"}), 409, "CONFLICT")
    wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json["subtasks"])
    assert_error(act(api, task["id"], "decompose", {"template": "UI"}), 409, "CONFLICT")
    agent = register(api)
    other = make_task(api, session["id"])
    wait_for(lambda: status_of(api, other["id"]) == "ASSIGNED")
    assert_error(act(api, other["id"], "decompose", {"template": "UI"}), 409, "CONFLICT")
    assert agent


def test_decomposition_runs_once_when_run_twice_at_once(api, database, db):
    from shared.services import decomposition

    session = make_session(api)  # not started: nothing is assigned meanwhile
    parent = make_task(api, session["id"])
    with database.transaction() as tx:
        decomposition.accept(tx, task_id=uuid.UUID(parent["id"]), template="MICROSERVICE")
    barrier = threading.Barrier(3)
    results = []

    def run():
        barrier.wait()
        with database.transaction() as tx:
            results.append(decomposition.run(tx, task_id=uuid.UUID(parent["id"])))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: api.get(f"/api/v1/tasks/{parent['id']}").json["subtasks"])
    count = db.scalar(select(func.count()).where(Task.parent_id == uuid.UUID(parent["id"])))
    assert count == len(TEMPLATES["MICROSERVICE"])
    assert sum(1 for r in results if r) <= 1


def test_a_decomposed_task_runs_to_completed_by_agents_alone(api):
    session = start_session(api)
    parent = make_task(api, session["id"], title="Checkout")
    act(api, parent["id"], "decompose", {"template": "FEATURE"})
    agents = [
        register(api, name=f"agent-{i}", capabilities=caps)
        for i, caps in enumerate(
            [["SYSTEM_DESIGN", "CODE_GENERATION"], ["TESTING", "DOCUMENTATION"], ["CODE_REVIEW"]]
        )
    ]
    wait_for(lambda: api.get(f"/api/v1/tasks/{parent['id']}").json["subtasks"])

    def work():
        for agent in agents:
            for task in held_by(api, agent["id"]):
                if task["status"] == "ASSIGNED":
                    assert (
                        act(api, task["id"], "start", {"agent_id": agent["id"]}).status_code == 200
                    )
                assert (
                    act(api, task["id"], "complete", {"agent_id": agent["id"]}).status_code == 200
                )
        return status_of(api, parent["id"]) == "COMPLETED"

    wait_for(work, timeout=30)
    subtasks = api.get(f"/api/v1/tasks?session_id={session['id']}&page_size=100").json["items"]
    assert {t["status"] for t in subtasks} == {"COMPLETED"}
    final = api.post(f"/api/v1/sessions/{session['id']}/complete").json
    assert final["status"] == "COMPLETED" and final["progress"]["percent_complete"] == 100.0


def test_assignment_respects_capability(api):
    session = start_session(api)
    tester = register(api, name="tester", capabilities=["TESTING"])
    task = make_task(api, session["id"], required_capabilities=["SECURITY_AUDIT"])
    testing = make_task(api, session["id"], required_capabilities=["TESTING"])
    wait_for(lambda: status_of(api, testing["id"]) == "ASSIGNED")
    assert status_of(api, task["id"]) == "PENDING"
    auditor = register(api, name="auditor", capabilities=["SECURITY_AUDIT", "TESTING"])
    wait_for(lambda: status_of(api, task["id"]) == "ASSIGNED")
    assert api.get(f"/api/v1/tasks/{task['id']}").json["assigned_agent_id"] == auditor["id"]
    assert tester


def test_many_tasks_few_slots_never_over_capacity(api, db):
    session = start_session(api)
    agents = [register(api, name=f"slot-{i}", max_concurrent_tasks=2) for i in range(3)]
    tasks = [make_task(api, session["id"]) for _ in range(40)]
    wait_for(lambda: sum(len(held_by(api, a["id"])) for a in agents) == 6)
    for _ in range(3):  # a few more assignment jobs change nothing
        api.post(f"/api/v1/agents/{agents[0]['id']}/heartbeat", json={"current_load": 0})
    assert all(len(held_by(api, a["id"])) == 2 for a in agents)
    done = 0
    while done < len(tasks):
        for agent in agents:
            for task in held_by(api, agent["id"]):
                act(api, task["id"], "start")
                act(api, task["id"], "complete")
                done += 1
        assert all(len(held_by(api, a["id"])) <= 2 for a in agents)
        if done < len(tasks):
            wait_for(lambda: any(held_by(api, a["id"]) for a in agents))
    assert db.scalar(select(func.count()).where(OutboxEvent.type == "task.assigned")) == 40


def test_only_running_sessions_get_agents(api, db):
    from shared import job_names

    paused = start_session(api, title="paused", priority="CRITICAL")
    pending = make_session(api, title="pending", priority="CRITICAL")
    running = start_session(api, title="running", priority="LOW")
    api.post(f"/api/v1/sessions/{paused['id']}/pause")
    paused_task = make_task(api, paused["id"])
    pending_task = make_task(api, pending["id"])
    running_task = make_task(api, running["id"])
    agent = register(api, max_concurrent_tasks=5)
    wait_for(lambda: status_of(api, running_task["id"]) == "ASSIGNED")
    _sender(api)(job_names.ASSIGN_READY_TASKS)
    _sender(api)(job_names.ASSIGN_READY_TASKS)
    wait_for(lambda: _queue_is_empty(api))
    assert status_of(api, paused_task["id"]) == "PENDING"
    assert status_of(api, pending_task["id"]) == "PENDING"
    api.post(f"/api/v1/sessions/{paused['id']}/resume")
    wait_for(lambda: status_of(api, paused_task["id"]) == "ASSIGNED")
    api.post(f"/api/v1/sessions/{pending['id']}/start")
    wait_for(lambda: status_of(api, pending_task["id"]) == "ASSIGNED")
    assert len(held_by(api, agent["id"])) == 3


def _queue_is_empty(api):
    import redis

    client = redis.Redis.from_url(api.application.extensions["orchestrator"].settings.redis_url)
    return client.llen("celery") == 0


def test_priority_orders_ready_tasks(api):
    low = start_session(api, title="low", priority="LOW")
    high = start_session(api, title="high", priority="HIGH")
    low_tasks = [make_task(api, low["id"]) for _ in range(3)]
    high_tasks = [make_task(api, high["id"]) for _ in range(3)]
    agent = register(api, max_concurrent_tasks=3)
    wait_for(lambda: len(held_by(api, agent["id"])) == 3)
    assert {t["id"] for t in held_by(api, agent["id"])} == {t["id"] for t in high_tasks}
    assert all(status_of(api, t["id"]) == "PENDING" for t in low_tasks)


def test_expired_agent_tasks_go_to_another_agent(api, database):
    session = start_session(api)
    first = register(api, name="first")
    task = make_task(api, session["id"])
    wait_for(lambda: status_of(api, task["id"]) == "ASSIGNED")
    act(api, task["id"], "start")
    second = register(api, name="second")
    with database.transaction() as tx:
        tx.execute(
            text("UPDATE agents SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": first["id"]},
        )
    from shared import job_names

    _sender(api)(job_names.EXPIRE_HEARTBEATS)
    wait_for(lambda: api.get(f"/api/v1/agents/{first['id']}").json["status"] == "OFFLINE")
    reassigned = wait_for(
        lambda: (
            (t := api.get(f"/api/v1/tasks/{task['id']}").json)["assigned_agent_id"] == second["id"]
            and t
        )
    )
    assert reassigned["status"] == "ASSIGNED" and reassigned["attempts"] == 1
    back = api.post(f"/api/v1/agents/{first['id']}/heartbeat", json={"current_load": 0}).json
    assert back["status"] == "IDLE"


def _sender(api):
    from orchestrator_api.job_sender import make_job_sender

    send = make_job_sender(api.application.extensions["orchestrator"].settings)
    return lambda name, *args: send(name, args, {})


@pytest.mark.parametrize("started", [False, True])
def test_task_timeouts_free_the_agent_and_retry(api, database, started):
    from shared import job_names

    session = start_session(api)
    agent = register(api, max_concurrent_tasks=1)
    task = make_task(api, session["id"])
    wait_for(lambda: status_of(api, task["id"]) == "ASSIGNED")
    if started:
        act(api, task["id"], "start")
    with database.transaction() as tx:
        tx.execute(
            text("UPDATE tasks SET deadline_at = now() - interval '1 second' WHERE id = :id"),
            {"id": task["id"]},
        )
    _sender(api)(job_names.TIME_OUT_TASKS)
    retried = wait_for(
        lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json)["attempts"] == 1 and t
    )
    assert ("run timeout" if started else "start timeout") in retried["error"]
    # the freed agent (the only one) gets the task again
    wait_for(lambda: status_of(api, task["id"]) == "ASSIGNED")
    assert api.get(f"/api/v1/tasks/{task['id']}").json["assigned_agent_id"] == agent["id"]


def test_progress_keeps_a_running_task_alive(api, database):
    from shared import job_names
    from shared.services import sweeps

    session = start_session(api)
    register(api)
    task = make_task(api, session["id"], timeout_seconds=2)
    wait_for(lambda: status_of(api, task["id"]) == "ASSIGNED")
    act(api, task["id"], "start")
    before = api.get(f"/api/v1/tasks/{task['id']}").json["deadline_at"]
    time.sleep(1.2)  # the deadline runs on real time: a progress report later pushes it
    after = act(api, task["id"], "progress", {"progress": 30}).json["deadline_at"]
    assert after > before
    time.sleep(1.2)  # past the first deadline, not the pushed one
    with database.transaction() as tx:
        assert sweeps.time_out_tasks(tx) == 0
    assert status_of(api, task["id"]) == "IN_PROGRESS"
    time.sleep(1.0)  # now past the pushed deadline too
    _sender(api)(job_names.TIME_OUT_TASKS)
    wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json["attempts"] == 1)


def test_reconcile_repairs_what_lost_jobs_left(api, database):
    from shared import job_names

    session = start_session(api)
    # a dependent left BLOCKED though its dependency completed
    dep = make_task(api, session["id"])
    waiting = make_task(api, session["id"], depends_on=[dep["id"]])
    # a decomposition accepted whose job never ran
    parent = make_task(api, session["id"])
    with database.transaction() as tx:
        tx.execute(text("UPDATE tasks SET status = 'COMPLETED' WHERE id = :id"), {"id": dep["id"]})
        tx.execute(
            text(
                "UPDATE tasks SET decomposition_template = 'BUGFIX',"
                " updated_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": parent["id"]},
        )
    _sender(api)(job_names.RECONCILE)
    wait_for(lambda: status_of(api, waiting["id"]) == "PENDING")
    subtasks = wait_for(lambda: api.get(f"/api/v1/tasks/{parent['id']}").json["subtasks"])
    assert len(subtasks) == len(TEMPLATES["BUGFIX"])
    # ready tasks left unassigned while an agent has room: the assign sweep
    with database.transaction() as tx:
        agent_id = uuid.uuid4()
        tx.execute(
            text(
                "INSERT INTO agents (id, name, type, capabilities, max_concurrent_tasks,"
                " current_load, status, last_heartbeat_at) VALUES (:id, 'quiet', 'BACKEND',"
                " ARRAY['CODE_GENERATION', 'DEBUGGING'], 5, 0, 'IDLE', now())"
            ),
            {"id": agent_id},
        )
    _sender(api)(job_names.ASSIGN_READY_TASKS)
    wait_for(lambda: status_of(api, waiting["id"]) == "ASSIGNED")


def test_a_job_for_a_missing_task_finishes_quietly(api, database):
    from orchestrator_worker import jobs as worker_jobs

    assert worker_jobs.decompose_task(str(uuid.uuid4())) == 0  # the base opens its transaction


def test_tasks_nobody_can_take_do_not_hold_back_the_others(api, database):
    from shared.services import assignment

    critical = start_session(api, title="critical", priority="CRITICAL")
    low = start_session(api, title="low", priority="LOW")
    with database.transaction() as tx:  # more unplaceable urgent tasks than one batch
        tx.execute(
            text(
                "INSERT INTO tasks (id, session_id, title, complexity, status,"
                " required_capabilities, attempts, progress, timeout_seconds)"
                " SELECT gen_random_uuid(), :sid, 'needs deployment', 'MEDIUM', 'PENDING',"
                " ARRAY['DEPLOYMENT'], 0, 0, 3600 FROM generate_series(1, :n)"
            ),
            {"sid": critical["id"], "n": assignment.DEFAULT_BATCH + 100},
        )
    small = [make_task(api, low["id"]) for _ in range(3)]
    register(api, name="coder")
    for task in small:
        wait_for(lambda task=task: status_of(api, task["id"]) == "ASSIGNED")
