"""Webhook deliveries survive a SIGKILLed webhooks worker: the Procfile's `webhooks`
worker, `worker` and `beat` as real processes on a broker of their own; the webhooks
worker is killed in the middle of deliveries and started again, and every event still
reaches the receiver, once or more, with its id."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select

from orchestrator_api.job_sender import make_job_sender
from shared import events, relay
from shared.db import Database
from shared.models.webhook import WebhookDelivery
from shared.services import webhooks
from tests.support.processes import free_port, start, stop
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.chaos

EVENTS_BEFORE = 150
EVENTS_WHILE_DEAD = 50


def _emit(database: Database, redis, count: int) -> None:
    with database.transaction() as db:
        for i in range(count):
            events.record(db, events.TASK_STATUS_CHANGED, task_id=str(uuid.uuid4()), n=i)
    while relay.publish_once(database, redis, retention=100_000):
        pass


def test_a_killed_webhooks_worker_loses_no_delivery(settings, spare_redis_url, tmp_path):
    import redis as redis_lib

    fault = settings.with_overrides(redis_url=spare_redis_url)
    database = Database(fault, job_sender=make_job_sender(fault))
    redis = redis_lib.Redis.from_url(spare_redis_url)
    env = {
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_REDISPATCH_SECONDS": "2",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "WEBHOOK_CONCURRENCY": "4",
        "WORKER_CONCURRENCY": "1",
        "WORKER_METRICS_PORT": str(free_port()),
        "WEBHOOK_WORKER_METRICS_PORT": str(free_port()),
        "CELERY_BEAT_SCHEDULE": str(tmp_path / "beat"),
    }
    processes = []
    with Receiver() as receiver:
        try:
            with database.transaction() as db:
                hook = webhooks.create(
                    db, url=receiver.url("/slow/0.05"), event_types=["task.*"], secret="s" * 20
                ).id
            _emit(database, redis, EVENTS_BEFORE)  # their jobs wait in the broker
            webhook_worker = start("webhooks", fault, **env)
            processes += [start("worker", fault, **env), start("beat", fault, **env)]

            wait_for(lambda: len(receiver.requests) >= 30, timeout=60)
            os.killpg(webhook_worker.pid, signal.SIGKILL)  # in the middle of deliveries
            webhook_worker.wait()
            delivered_before_kill = len(receiver.requests)
            assert delivered_before_kill < EVENTS_BEFORE
            _emit(database, redis, EVENTS_WHILE_DEAD)
            processes.append(start("webhooks", fault, **env))

            def all_succeeded():
                with database.transaction() as db:
                    return (
                        db.scalar(
                            select(func.count())
                            .select_from(WebhookDelivery)
                            .where(WebhookDelivery.status == "SUCCEEDED")
                        )
                        == EVENTS_BEFORE + EVENTS_WHILE_DEAD
                    )

            wait_for(all_succeeded, timeout=120, interval=0.5)
        finally:
            for process in processes:
                stop(process)

        received = Counter(r.headers["X-Orchestrator-Event-Id"] for r in receiver.to("/slow/0.05"))
        with database.transaction() as db:
            deliveries = db.scalars(
                select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook)
            ).all()
        assert len(deliveries) == EVENTS_BEFORE + EVENTS_WHILE_DEAD
        # every event once or more, with its id (at least once: a killed attempt repeats)
        assert set(received) == {str(d.event_id) for d in deliveries}
        for request in receiver.to("/slow/0.05"):
            assert json.loads(request.body)["id"] == request.headers["X-Orchestrator-Event-Id"]
    database.dispose()
