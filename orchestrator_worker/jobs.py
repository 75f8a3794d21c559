"""Thin jobs: take ids, call one service in one transaction, return (orchestrator_worker/
job_base.py opens the transaction of a job declared with `transaction=True`).

Every job is idempotent (ARCHITECTURE principle 2): it reloads rows, locks them, and
does nothing when the work is already done; the beat sweeps do the same work again if a
job is lost. Jobs log the ids they touch (their own Celery task id and the request id that
caused them are on every line, shared/logs.py) and count what the services return for
/metrics (shared/metrics.py): the services know nothing of Prometheus.
"""

from __future__ import annotations

import logging
import time
import uuid

from celery import shared_task

from orchestrator_worker import runtime
from shared import job_names, metrics, relay
from shared.services import (
    assignment,
    decomposition,
    idempotency,
    settle,
    sweeps,
    task_lifecycle,
    task_logs,
)
from shared.unit_of_work import after_commit

log = logging.getLogger(__name__)

REPAIRS = (
    "timed_out_tasks",
    "released_dependents",
    "cancelled_orphaned_dependents",
    "settled_sessions",
    "released_from_offline_agents",
    "finished_decompositions",
    "expired_idempotency_keys",
)
for _repair in REPAIRS:  # every series from 0, so rate() sees the first repair
    metrics.SWEEP_REPAIRS.labels(_repair)


@shared_task(name=job_names.ASSIGN_READY_TASKS)
def assign_ready_tasks() -> int:
    """Assign ready tasks, a batch per transaction, until no more fit."""
    total = 0
    while True:
        with runtime.database().transaction() as db:
            batch = assignment.assign_batch(db)
        assigned = batch.pairs
        if not assigned:  # no ready task that an agent with room can take
            break
        metrics.observe_assignments(batch.times)
        total += len(assigned)
        log.info(
            "assigned %d tasks",
            len(assigned),
            extra={"assignments": {str(task): str(agent) for task, agent in assigned}},
        )
        if len(assigned) < assignment.DEFAULT_BATCH:  # nothing more, or no room left
            break
    return total


@shared_task(name=job_names.DECOMPOSE_TASK, transaction=True)
def decompose_task(db, task_id: str) -> int:
    created = decomposition.run(db, task_id=uuid.UUID(task_id))
    log.info(
        "decomposed task %s into %d subtasks",
        task_id,
        len(created),
        extra={"task_id": task_id, "subtask_ids": [str(s) for s in created]},
    )
    return len(created)


SETTLE_PATIENCE = 50  # batches that find only rows others hold, 0.2 s apart


@shared_task(name=job_names.SETTLE_SESSION)
def settle_session(session_id: str) -> int:
    """Cancel a finished session's unfinished tasks, a bounded batch per transaction,
    skipping rows other transactions hold (a creation being refused, say) and coming back
    for them; after SETTLE_PATIENCE empty batches the reconcile sweep takes what is left."""
    sid = uuid.UUID(session_id)
    total = idle = 0
    while idle < SETTLE_PATIENCE:
        with runtime.database().transaction() as db:
            cancelled = settle.cancel_session_tasks(db, session_id=sid)
            left = cancelled == settle.BATCH or settle.has_unfinished_tasks(db, session_id=sid)
        total += cancelled
        if not left:
            break
        idle = 0 if cancelled else idle + 1
        if not cancelled:
            time.sleep(0.2)
    log.info("cancelled %d tasks of finished session %s", total, session_id)
    return total


@shared_task(name=job_names.EXPIRE_HEARTBEATS)
def expire_heartbeats() -> int:
    total = 0
    while True:
        with runtime.database().transaction() as db:
            expired = sweeps.expire_heartbeats(db)
        total += expired
        if expired < sweeps.BATCH:
            break
    if total:
        metrics.HEARTBEAT_EXPIRIES.inc(total)
        log.warning("%d agents went OFFLINE (heartbeat expired)", total)
    return total


@shared_task(name=job_names.TIME_OUT_TASKS, transaction=True)
def time_out_tasks(db) -> int:
    timed_out = sweeps.time_out_tasks(db)
    if timed_out:
        after_commit(db, lambda: _repaired({"timed_out_tasks": timed_out}, "tasks timed out"))
    return timed_out


@shared_task(name=job_names.RECONCILE, transaction=True)
def reconcile(db) -> dict:
    """Repairs what a lost job left behind."""
    repaired = {
        "released_dependents": task_lifecycle.release_ready_dependents(db),
        "cancelled_orphaned_dependents": task_lifecycle.cancel_orphaned_dependents(db),
        "settled_sessions": settle.settle_finished_sessions(db),
        "released_from_offline_agents": sweeps.release_tasks_of_offline_agents(db),
        "finished_decompositions": sweeps.finish_lost_decompositions(db),
        "expired_idempotency_keys": idempotency.prune(db),
    }
    if any(repaired.values()):
        after_commit(db, lambda: _repaired(repaired, "reconcile repaired"))
    return repaired


def _repaired(counts: dict[str, int], what: str) -> None:
    """Once the repairs are committed: counted for /metrics and logged."""
    for repair, count in counts.items():
        if count:
            metrics.SWEEP_REPAIRS.labels(repair).inc(count)
    log.warning("%s %s", what, counts, extra={"repaired": counts})


@shared_task(name=job_names.PRUNE_TASK_LOGS)
def prune_task_logs() -> int:
    """The logs of tasks finished more than TASK_LOG_RETENTION_SECONDS ago, a batch of
    tasks per transaction, at most PRUNE_MAX_BATCHES a run (the next run goes on)."""
    retention = runtime.database().settings.task_log_retention_seconds
    total = 0
    for _ in range(task_logs.PRUNE_MAX_BATCHES):
        with runtime.database().transaction() as db:
            pruned = task_logs.prune(db, retention_seconds=retention)
        total += pruned
        if pruned < task_logs.PRUNE_BATCH_TASKS:
            break
    if total:
        log.info("pruned the logs of %d finished tasks", total)
    return total


@shared_task(name=job_names.PUBLISH_EVENTS)
def publish_events() -> int:
    """Safety net for the web processes' relays: publish what is still unpublished."""
    settings = runtime.database().settings
    published = relay.publish_once(
        runtime.database(), runtime.redis(), retention=settings.event_retention
    )
    if published:
        metrics.EVENTS_PUBLISHED.inc(published)
    relay.prune(runtime.database(), retention=settings.event_retention)
    return published
