"""Per-process resources of the worker: the database (made lazily, reset after fork)."""

from __future__ import annotations

import threading

from shared.config import load_settings_or_exit
from shared.db import Database

_lock = threading.Lock()
_database: Database | None = None


def _send(name: str, args: tuple, kwargs: dict) -> None:
    from orchestrator_worker.celery_app import app

    app.send_task(name, args=args, kwargs=kwargs)


def database() -> Database:
    global _database
    with _lock:
        if _database is None:
            _database = Database(load_settings_or_exit(), job_sender=_send, pool_size=5)
        return _database


def configure(settings) -> None:
    """Use these settings from now on (tests, embedding)."""
    global _database
    with _lock:
        if _database is not None:
            _database.dispose()
        _database = Database(settings, job_sender=_send, pool_size=5)


def reset() -> None:
    global _database
    with _lock:
        if _database is not None:
            _database.engine.dispose(close=False)
        _database = None
