"""The Procfile's worker serves the metrics its prefork children count on
WORKER_METRICS_PORT, and logs JSON lines with the job's ids."""

from __future__ import annotations

import json

import pytest
import requests
from celery import Celery
from sqlalchemy import text

from shared import job_names
from tests.api.helpers import register
from tests.support.metrics import parse
from tests.support.processes import free_port, output, start, stop
from tests.support.waiting import wait_for


@pytest.mark.process
def test_worker_metrics_sum_its_pool_processes(settings, spare_redis_url, client, database):
    agent = register(client)
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE agents SET last_heartbeat_at = now() - interval '1 day' WHERE id = :id"),
            {"id": agent["id"]},
        )
    port = free_port()
    # a broker of its own: the in-process test worker does not take these jobs
    worker = start(
        "worker",
        settings,
        REDIS_URL=spare_redis_url,
        WORKER_METRICS_PORT=str(port),
        WORKER_CONCURRENCY="1",
        LOG_LEVEL="INFO",
    )
    sender = Celery("test-sender", broker=spare_redis_url, set_as_current=False)
    try:

        def scrape():
            assert worker.poll() is None, output(worker)
            try:
                return parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except requests.ConnectionError:
                return None

        wait_for(scrape, timeout=30)
        sender.send_task(job_names.EXPIRE_HEARTBEATS, headers={"request_id": "req-from-test"})
        key = ("orchestrator_jobs_total", job_names.EXPIRE_HEARTBEATS, "SUCCESS")
        # the job counts its expiries as it runs, and is counted itself once it returned
        samples = wait_for(
            lambda: (
                (s := scrape())
                and s["orchestrator_heartbeat_expiries_total",] == 1
                and key in s
                and s
            ),
            timeout=30,
        )
        assert samples[key] == 1

        def job_lines():  # the child writes its log line after the job returned
            lines = [json.loads(x) for x in output(worker).splitlines() if x.startswith("{")]
            return [x for x in lines if x["logger"] == "orchestrator_worker.jobs"]

        (expired,) = wait_for(job_lines)
        assert expired["job"] == job_names.EXPIRE_HEARTBEATS
        assert expired["request_id"] == "req-from-test" and expired["job_id"]
    finally:
        sender.close()
        stop(worker)
