"""The base of every job (the Celery app's `task_cls`).

A job declared with `transaction=True` runs in one transaction that the base opens and
passes in as its first argument, `db` (committed when the job returns, rolled back if it
raises), as pallets' Celery example and warehouse do: the job body is only the service
call. Jobs that commit in batches, or must hold no transaction while they wait, are
declared without it and open their own (`runtime.database().transaction()`).
Acknowledgement (late) and results (none) are the app's settings for every job.
"""

from __future__ import annotations

from celery import Task

from orchestrator_worker import runtime


class Job(Task):
    transaction = False
    # No argument check when sent: beat would count `db`, which the base passes in itself.
    typing = False

    def __call__(self, *args, **kwargs):
        if not self.transaction:
            return super().__call__(*args, **kwargs)
        with runtime.database().transaction() as db:
            return super().__call__(db, *args, **kwargs)
