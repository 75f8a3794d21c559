"""Per-process resources of the worker: the database (made lazily, reset after fork)."""

from __future__ import annotations

import threading

import redis as redis_lib

from shared import logs
from shared.config import load_settings_or_exit
from shared.db import WORKER_POOL, Database

_lock = threading.RLock()
_database: Database | None = None
_redis: redis_lib.Redis | None = None


def _send(name: str, args: tuple, kwargs: dict) -> None:
    from orchestrator_worker.celery_app import app

    # a job sent by a job carries on the request id of the job that sent it
    app.send_task(name, args=args, kwargs=kwargs, headers=logs.job_headers())


def database() -> Database:
    global _database
    with _lock:
        if _database is None:
            _database = Database(load_settings_or_exit(), job_sender=_send, pool=WORKER_POOL)
        return _database


def redis():
    global _redis
    with _lock:
        if _redis is None:
            _redis = redis_lib.Redis.from_url(database().settings.redis_url, socket_timeout=5)
        return _redis


def configure(settings) -> None:
    """Use these settings from now on (tests, embedding)."""
    global _database, _redis
    with _lock:
        if _database is not None:
            _database.dispose()
        _database = Database(settings, job_sender=_send, pool=WORKER_POOL)
        _redis = None


def reset() -> None:
    global _database
    with _lock:
        if _database is not None:
            _database.engine.dispose(close=False)
        _database = None
