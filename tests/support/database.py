"""The test database's tables, emptied between tests (and before a live server starts)."""

from __future__ import annotations

import time

import redis as redis_lib
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import Database

TABLES = (
    "idempotency_keys, outbox_events, task_dependencies, tasks, agents, sessions, "
    "webhook_deliveries, webhooks"
)


def empty_tables(database: Database) -> None:
    """Empty tables, and the event stream whose ids restart with them."""
    from shared.relay import STREAM_KEY

    for attempt in range(10):
        try:
            with database.engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            break
        except OperationalError:  # a deadlock with a job the worker is still finishing
            if attempt == 9:
                raise
            time.sleep(0.2)  # let the worker's transaction end before trying again
    redis_lib.Redis.from_url(database.settings.redis_url).delete(STREAM_KEY)
