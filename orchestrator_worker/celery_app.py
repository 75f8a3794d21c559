"""The Celery app and the beat schedule. Entry point: `celery -A orchestrator_worker.celery_app`."""

from __future__ import annotations

import hashlib
import os
import tempfile

from celery import Celery
from celery.signals import worker_process_init

from orchestrator_worker import observability, runtime
from shared import job_names
from shared.config import load_settings_or_exit

settings = load_settings_or_exit()
# Before the jobs module (and prometheus_client with it) is imported.
observability.prepare(settings)
observability.install(settings)
# How often beat runs the sweeps (the webhook delivery sweep too); reconciliation runs at
# a third of that pace.
SWEEP_INTERVAL = float(settings.sweep_interval_seconds)
# The web processes' relays publish when PostgreSQL notifies them; beat's publish_events
# is the net for a stack where no web process runs (the gateway's sockets and the webhooks
# still get their events), and prunes the outbox.
PUBLISH_EVENTS_INTERVAL = 10.0


def beat_schedule_file() -> str:
    """CELERY_BEAT_SCHEDULE, else a file of this stack's own (named after its database and
    Redis), so two stacks on one host never share beat's record of what it last sent."""
    if settings.celery_beat_schedule.strip():
        return settings.celery_beat_schedule.strip()
    stack = hashlib.sha256(f"{settings.database_url}|{settings.redis_url}".encode()).hexdigest()
    return os.path.join(tempfile.gettempdir(), f"orchestrator-beat-{stack[:12]}")


app = Celery(
    "orchestrator",
    task_cls="orchestrator_worker.job_base:Job",
    broker=settings.broker_url,
    include=["orchestrator_worker.jobs", "orchestrator_worker.webhook_jobs"],
)
app.conf.update(
    beat_schedule_filename=beat_schedule_file(),
    task_acks_late=True,
    # acks_late alone does not redeliver a job whose worker process was SIGKILLed.
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_time_limit=120,
    task_soft_time_limit=100,
    # Jobs are short; an unacknowledged one comes back after this long.
    broker_transport_options={"visibility_timeout": 300},
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
    task_routes=job_names.ROUTES,  # deliveries on their own queue: the `webhooks` worker's
    beat_schedule={
        "assign-ready-tasks": {"task": job_names.ASSIGN_READY_TASKS, "schedule": SWEEP_INTERVAL},
        "expire-heartbeats": {"task": job_names.EXPIRE_HEARTBEATS, "schedule": SWEEP_INTERVAL},
        "time-out-tasks": {"task": job_names.TIME_OUT_TASKS, "schedule": SWEEP_INTERVAL},
        "reconcile": {"task": job_names.RECONCILE, "schedule": 3 * SWEEP_INTERVAL},
        "publish-events": {"task": job_names.PUBLISH_EVENTS, "schedule": PUBLISH_EVENTS_INTERVAL},
        "prune-task-logs": {"task": job_names.PRUNE_TASK_LOGS, "schedule": 60.0},
        "sweep-webhook-deliveries": {
            "task": job_names.SWEEP_WEBHOOK_DELIVERIES,
            "schedule": SWEEP_INTERVAL,
        },
    },
)


@worker_process_init.connect
def _fresh_engine_per_child(**_kwargs) -> None:
    # A prefork child must not reuse connections opened by its parent.
    runtime.reset()
