"""The retention of task logs through a real Celery worker: the beat job prunes the logs
of tasks finished more than TASK_LOG_RETENTION_SECONDS ago, and only those."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text

from orchestrator_api.job_sender import make_job_sender
from shared import job_names
from shared.models import TaskLogLine
from tests.api.helpers import act, make_task, register, start_session
from tests.support.waiting import wait_for


def log_lines(database, task_id) -> int:
    with database.session() as db:
        return db.scalar(select(func.count()).where(TaskLogLine.task_id == task_id))


def test_the_prune_job_removes_only_logs_past_their_retention(api, database):
    pool = f"prune-{uuid.uuid4().hex[:6]}"  # this test's agent takes only this test's tasks
    session = start_session(api, pool=pool)
    agent = register(api, f"pruned-{uuid.uuid4().hex[:6]}", pool=pool)
    tasks = []
    for _ in range(2):
        task = make_task(api, session["id"])
        task_url = f"/api/v1/tasks/{task['id']}"
        wait_for(lambda url=task_url: api.get(url).json["assigned_agent_id"] == agent["id"])
        body = {"agent_id": agent["id"], "lines": [{"stream": "stdout", "text": "line"}] * 3}
        assert api.post(f"/api/v1/tasks/{task['id']}/logs", json=body).status_code == 202
        assert act(api, task["id"], "start", {"agent_id": agent["id"]}).status_code == 200
        complete = act(api, task["id"], "complete", {"agent_id": agent["id"], "result": {}})
        assert complete.status_code == 200
        tasks.append(uuid.UUID(task["id"]))
    old, recent = tasks
    retention = api.application.extensions["orchestrator"].settings.task_log_retention_seconds
    with database.transaction() as tx:
        tx.execute(
            text(
                "UPDATE tasks SET completed_at = now() - make_interval(secs => :s) WHERE id = :id"
            ),
            {"s": retention + 60, "id": old},
        )
    send = make_job_sender(api.application.extensions["orchestrator"].settings)
    send(job_names.PRUNE_TASK_LOGS, (), {})
    wait_for(lambda: log_lines(database, old) == 0)
    assert log_lines(database, recent) == 3
    page = api.get(f"/api/v1/tasks/{old}/logs").json
    assert page["items"] == [] and page["pruned"] and page["finished"]
