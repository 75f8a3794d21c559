"""Test fixtures on real PostgreSQL and Redis.

Each run creates its own database (dropped at the end) and picks its own Redis db index,
so parallel runs on one machine do not collide. Each test starts from empty tables.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis as redis_lib
from celery.contrib.testing.worker import start_worker
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shared.config import Settings
from shared.db import Database

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
# Tests send many requests from one client; the limit itself has tests of its own.
UNLIMITED_RATE = "1000000/minute"
TABLES = "idempotency_keys, outbox_events, task_dependencies, tasks, agents, sessions"


CLAIM_KEY = "orchestrator-test-run"
CLAIM_SECONDS = 3 * 3600


class RedisIndexBusy(RuntimeError):
    pass


def claim_redis_db(*, use_env: bool = True, host: str = "127.0.0.1", port: int = 6379) -> int:
    """A Redis db index (1-15) that was empty when this run claimed it. An index holding
    any key is someone's data (another stack's broker, another run's claim) and is never
    taken, so the run can flush what it claimed without touching anything else."""
    wanted = os.environ.get("TEST_REDIS_DB") if use_env else None
    indexes = [int(wanted)] if wanted else list(range(1, 16))
    for index in indexes:
        client = redis_lib.Redis(host=host, port=port, db=index)
        if not client.set(CLAIM_KEY, os.getpid(), nx=True, ex=CLAIM_SECONDS):
            continue
        if client.dbsize() == 1:
            return index
        release_redis_db(client)  # keys of someone else's: not ours to use
    if wanted:
        raise RedisIndexBusy(
            f"TEST_REDIS_DB={wanted}: that Redis db index holds keys this test run did not "
            "write (another stack or run); the suite only uses an empty index"
        )
    raise RedisIndexBusy(
        "no empty Redis db index among 1-15: each holds another stack's or run's keys, "
        "and the suite never flushes data it did not write (set TEST_REDIS_DB to an empty one)"
    )


def release_redis_db(client: redis_lib.Redis, *, flush: bool = False) -> None:
    """Give back a claimed index: flushed when `flush` (everything in it is this run's,
    since it was empty when claimed), else only the claim key removed."""
    if client.get(CLAIM_KEY) != str(os.getpid()).encode():
        return  # the claim expired and someone else holds the index now
    if flush:
        client.flushdb()
    else:
        client.delete(CLAIM_KEY)


@pytest.fixture(scope="session")
def settings() -> Settings:
    name = f"orch_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    redis_db = claim_redis_db()
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    test_settings = Settings(
        database_url=url,
        redis_url=f"redis://127.0.0.1:6379/{redis_db}",
        log_level="WARNING",
        rate_limit=UNLIMITED_RATE,  # tests/api/test_rate_limits.py tests the limit
    )
    _migrate(test_settings)
    run_redis = redis_lib.Redis.from_url(test_settings.redis_url)
    yield test_settings
    release_redis_db(run_redis, flush=True)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrate(test_settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(os.path.join(ROOT, "alembic.ini"))
    config.attributes["url"] = test_settings.sqlalchemy_url
    config.attributes["skip_logging"] = True
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def sent_jobs() -> list:
    """Jobs the code under test asked for; tests of the engine use a real worker."""
    return []


@pytest.fixture(scope="session")
def database(settings, sent_jobs) -> Database:
    database = Database(settings, job_sender=lambda name, args, kwargs: sent_jobs.append(name))
    yield database
    database.dispose()


@pytest.fixture(autouse=True)
def clean_tables(request, sent_jobs):
    """Every test that touches the database starts from empty tables."""
    shares_data = request.node.get_closest_marker("shared_data") is not None
    if not shares_data and ("settings" in request.fixturenames or _uses_db(request)):
        empty_tables(request.getfixturevalue("database"))
    sent_jobs.clear()
    yield


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
            time.sleep(0.2)
    redis_lib.Redis.from_url(database.settings.redis_url).delete(STREAM_KEY)


def _uses_db(request) -> bool:
    return bool({"database", "db", "app", "client"} & set(request.fixturenames))


@pytest.fixture
def db(database):
    """A session for arranging and checking data; commit explicitly to make it visible."""
    session = database.session()
    yield session
    session.rollback()
    session.close()


@pytest.fixture(scope="session")
def app(settings, database):
    from orchestrator_api.app import create_app

    flask_app = create_app(settings)
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def redis(settings):
    return redis_lib.Redis.from_url(settings.redis_url)


@pytest.fixture
def spare_redis_url(settings):
    """A second Redis db, claimed like the run's own: a broker that the in-process
    `celery_worker` does not consume from."""
    index = claim_redis_db(use_env=False)
    try:
        yield f"redis://127.0.0.1:6379/{index}"
    finally:
        release_redis_db(redis_lib.Redis(host="127.0.0.1", port=6379, db=index), flush=True)


@pytest.fixture(scope="session")
def celery_worker(settings):
    from orchestrator_worker import runtime
    from orchestrator_worker.celery_app import app as celery_app

    celery_app.conf.broker_url = settings.redis_url
    runtime.configure(settings)
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        queues=["celery", "webhooks"],  # the Procfile's worker and webhooks worker, in one
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield celery_app


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
