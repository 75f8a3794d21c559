"""Test fixtures on real PostgreSQL and Redis.

Each run creates its own database (dropped at the end) and picks its own Redis db index,
so parallel runs on one machine do not collide. Each test starts from empty tables.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis as redis_lib
from celery.contrib.testing.worker import start_worker
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.config import Settings
from shared.db import Database
from tests.support import ROOT
from tests.support.database import empty_tables
from tests.support.redis_claim import claimed_redis_url

SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
# CREATE and DROP DATABASE: PostgreSQL itself when TEST_POSTGRES_URL is a pooler's
# (`make test-pgbouncer`, tests/support/pgbouncer.py).
ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", SERVER_URL)
# Tests send many requests from one client; the limit itself has tests of its own.
UNLIMITED_RATE = "1000000/minute"


@pytest.fixture(scope="session")
def settings() -> Settings:
    name = f"orch_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with claimed_redis_url() as redis_url:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
        direct = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        test_settings = Settings(
            database_url=url,
            database_listen_url=direct,  # LISTEN keeps session state: past any pooler
            redis_url=redis_url,
            log_level="WARNING",
            rate_limit=UNLIMITED_RATE,  # tests/api/test_rate_limits.py tests the limit
            # `make test-rabbitmq` runs the engine tests with RabbitMQ as the broker
            celery_broker_url=os.environ.get("TEST_CELERY_BROKER_URL", ""),
        )
        try:
            _migrate(test_settings)
            yield test_settings
        finally:
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
    with claimed_redis_url(use_env=False) as url:
        yield url


@pytest.fixture(scope="session")
def celery_worker(settings):
    from orchestrator_worker import runtime
    from orchestrator_worker.celery_app import app as celery_app

    celery_app.conf.broker_url = settings.broker_url
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
