"""Sends Celery jobs by name (ARCHITECTURE principle 6: the API imports no worker code).

Each job carries the id of the request that sent it in its `request_id` header, so the
worker's log lines of that job name the request (shared/logs.py).
"""

from __future__ import annotations

from celery import Celery

from shared import job_names, logs
from shared.config import Settings


def make_job_sender(settings: Settings):
    client = Celery("orchestrator-api", broker=settings.broker_url, set_as_current=False)
    client.conf.update(
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=False,
        task_serializer="json",
        task_routes=job_names.ROUTES,
        # If the broker is away, give up quickly: the sweeps find the same work later.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )

    def send(name: str, args: tuple, kwargs: dict) -> None:
        client.send_task(name, args=args, kwargs=kwargs, headers=logs.job_headers())

    send.client = client
    return send
