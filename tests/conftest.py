"""Test fixtures on real PostgreSQL and Redis.

Each run creates its own database (dropped at the end) and picks its own Redis db index,
so parallel runs on one machine do not collide. Each test starts from empty tables.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.config import Settings
from shared.db import Database

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TABLES = "outbox_events, task_dependencies, tasks, agents, sessions"


def _redis_db() -> int:
    return int(os.environ.get("TEST_REDIS_DB", str(1 + os.getpid() % 15)))


@pytest.fixture(scope="session")
def settings() -> Settings:
    name = f"orch_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    test_settings = Settings(
        database_url=url,
        redis_url=f"redis://127.0.0.1:6379/{_redis_db()}",
        log_level="WARNING",
    )
    _migrate(test_settings)
    redis_lib.Redis.from_url(test_settings.redis_url).flushdb()
    yield test_settings
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
    if "settings" in request.fixturenames or _uses_db(request):
        database = request.getfixturevalue("database")
        with database.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
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
