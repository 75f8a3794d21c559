"""Jobs log their Celery task id, the ids they touch and the request id of the API call
that caused them, through a real (in-process) Celery worker; and they count for /metrics."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from celery.signals import task_prerun
from prometheus_client import REGISTRY
from sqlalchemy import text

from shared import job_names, logs
from tests.api.helpers import act, make_session, make_task, register, start_session
from tests.support.waiting import wait_for


@pytest.fixture
def job_records(caplog):
    """The records of our jobs' loggers."""
    caplog.set_level(logging.INFO, logger="orchestrator_worker.jobs")

    def read(request_id=None, job=None) -> list[logging.LogRecord]:
        return [
            record
            for record in list(caplog.records)
            if (request_id is None or getattr(record, "request_id", None) == request_id)
            and (job is None or getattr(record, "job", None) == job)
        ]

    return read


@pytest.fixture
def bound_in_jobs():
    """What each job has bound (every line it logs carries it), seen as it starts."""
    seen: list[tuple[str, dict]] = []

    def record(task=None, **_kwargs):
        seen.append((task.name, dict(logs.bound())))

    task_prerun.connect(record, weak=False)
    yield seen
    task_prerun.disconnect(record)


def test_a_request_id_travels_into_its_jobs_and_theirs(api, job_records, bound_in_jobs):
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    session = make_session(api)  # not started: nothing is assigned meanwhile
    parent = make_task(api, session["id"], title="Payments")
    response = api.post(
        f"/api/v1/tasks/{parent['id']}/decompose",
        json={"template": "CRUD"},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 202

    decomposed = wait_for(
        lambda: [
            r
            for r in job_records(request_id, "orchestrator.decompose_task")
            if r.name == "orchestrator_worker.jobs"
        ]
    )
    (record,) = decomposed
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == request_id
    assert line["job"] == "orchestrator.decompose_task"
    assert uuid.UUID(line["job_id"])  # the Celery task id
    assert line["task_id"] == parent["id"]
    subtasks = api.get(f"/api/v1/tasks/{parent['id']}").json["subtasks"]
    assert sorted(line["subtask_ids"]) == sorted(subtasks)
    # the assignment job that the decomposition's commit sent carries the same request id
    assign = wait_for(
        lambda: [
            bound
            for name, bound in bound_in_jobs
            if name == "orchestrator.assign_ready_tasks" and bound.get("request_id") == request_id
        ]
    )
    assert assign[0]["job_id"] != line["job_id"]
    assert "request_id" not in logs.bound()  # nothing left bound in this thread


def test_assignments_log_their_pairs_and_observe_latency(api, job_records):
    count = ("orchestrator_assignment_latency_seconds_count", {"attempt": "first"})
    before = REGISTRY.get_sample_value(*count) or 0
    session = start_session(api)
    task = make_task(api, session["id"])
    agent = register(api)  # its assignment job assigns the task
    wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json["status"] == "ASSIGNED")
    assigned = wait_for(
        lambda: [
            r
            for r in job_records(job="orchestrator.assign_ready_tasks")
            if task["id"] in getattr(r, "assignments", {})
        ]
    )
    assert assigned[0].assignments[task["id"]] == agent["id"]
    assert REGISTRY.get_sample_value(*count) >= before + 1


def test_sweeps_count_expiries_and_repairs(api, database, celery_worker):
    expiries = REGISTRY.get_sample_value("orchestrator_heartbeat_expiries_total") or 0
    timeouts = ("orchestrator_sweep_repairs_total", {"repair": "timed_out_tasks"})
    timed_out = REGISTRY.get_sample_value(*timeouts) or 0
    session = start_session(api)
    task = make_task(api, session["id"])
    agent = register(api)
    wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json["status"] == "ASSIGNED")
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE tasks SET deadline_at = now() - interval '1 second'"))
    celery_worker.send_task(job_names.TIME_OUT_TASKS)
    wait_for(lambda: REGISTRY.get_sample_value(*timeouts) == timed_out + 1)
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE agents SET last_heartbeat_at = now() - interval '1 day' WHERE id = :id"),
            {"id": agent["id"]},
        )
    celery_worker.send_task(job_names.EXPIRE_HEARTBEATS)
    wait_for(
        lambda: REGISTRY.get_sample_value("orchestrator_heartbeat_expiries_total") == expiries + 1
    )
    assert act(api, task["id"], "cancel").status_code == 200
