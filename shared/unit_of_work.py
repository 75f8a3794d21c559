"""Work that must happen only after the current transaction commits.

Services never commit (ARCHITECTURE principle 4), so they cannot send a Celery job or
publish an event themselves. They ask for it with `after_commit`; the boundary that
commits (a request or a job) runs the callbacks after a successful commit and drops them
on rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_CALLBACKS = "after_commit_callbacks"
_JOBS = "requested_jobs"
JobSender = Callable[[str, tuple, dict], Any]


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    session.info.setdefault(_CALLBACKS, []).append(callback)


def request_job(session: Session, name: str, *args: Any, **kwargs: Any) -> None:
    """Send Celery job `name` once this transaction commits (deduplicated per transaction)."""
    jobs: dict = session.info.setdefault(_JOBS, {})
    jobs[(name, args, tuple(sorted(kwargs.items())))] = (name, args, kwargs)


def install(session_factory, job_sender: JobSender | None) -> None:
    """Hook the callbacks into every session made by `session_factory`."""

    @event.listens_for(session_factory, "after_commit")
    def _run(session: Session) -> None:
        callbacks = session.info.pop(_CALLBACKS, [])
        jobs = session.info.pop(_JOBS, {})
        for name, args, kwargs in jobs.values():
            if job_sender is None:
                continue
            try:
                job_sender(name, args, kwargs)
            except Exception:
                # The sweeps find the same work from the database (principle 2).
                log.exception("could not send job %s; a sweep will do the work", name)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")

    @event.listens_for(session_factory, "after_soft_rollback")
    def _drop(session: Session, previous_transaction) -> None:
        if previous_transaction.parent is None:
            session.info.pop(_CALLBACKS, None)
            session.info.pop(_JOBS, None)
