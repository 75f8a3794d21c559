"""Thin jobs: take ids, call one service in one transaction, return.

Every job is idempotent (ARCHITECTURE principle 2): it reloads rows, locks them, and
does nothing when the work is already done; the beat sweeps do the same work again if a
job is lost.
"""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator_worker import runtime
from shared import jobs
from shared.services import assignment
from shared.services import tasks as task_service

log = logging.getLogger(__name__)

JOB_OPTIONS = {"acks_late": True, "ignore_result": True}


@shared_task(name=jobs.ASSIGN_READY_TASKS, **JOB_OPTIONS)
def assign_ready_tasks() -> int:
    """Assign ready tasks in batches until no more fit."""
    total = 0
    while True:
        with runtime.database().transaction() as db:
            assigned = assignment.assign_ready(db)
        total += len(assigned)
        if len(assigned) < assignment.DEFAULT_BATCH:
            break
    if total:
        log.info("assigned %d tasks", total)
    return total


@shared_task(name=jobs.RECONCILE, **JOB_OPTIONS)
def reconcile() -> int:
    """Repairs what a lost job left: dependents still BLOCKED after their dependencies
    completed. (Ready tasks left unassigned are the assign sweep's work.)"""
    with runtime.database().transaction() as db:
        released = task_service.release_ready_dependents(db)
    if released:
        log.warning("reconcile released %d blocked tasks", released)
    return released
