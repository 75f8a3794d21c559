"""The models and the migrations must describe the same schema."""

import contextlib
import json
import os

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from shared.db import Base
from tests.support import ROOT


def test_models_and_migrations_agree(database):
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


@contextlib.contextmanager
def scratch_database(database):
    """An empty database of its own, and an Alembic config pointing at it."""
    admin = create_engine(
        database.settings.sqlalchemy_url.rsplit("/", 1)[0] + "/postgres",
        isolation_level="AUTOCOMMIT",
    )
    name = database.engine.url.database + "_mig"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = database.engine.url.set(database=name).render_as_string(hide_password=False)
    config = Config(os.path.join(ROOT, "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["skip_logging"] = True
    try:
        yield url, config
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_downgrade_and_upgrade_round_trip(database):
    with scratch_database(database) as (url, config):
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        engine = create_engine(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        command.upgrade(config, "head")


def test_0005_purges_the_agent_tokens_stored_in_answers(database):
    """Registration answers stored before issue 12 carry the agent's 30-day token."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2VjcmV0"
    agent = {"id": "0b0e7f0e-4a8b-4bd3-8a53-2f4d2b1e9c11", "name": "alice", "token": token}
    rows = {
        "registration": json.dumps(agent),
        "session": json.dumps({"id": "s-1", "title": "a title naming a token"}),
        "claimed, no answer yet": None,
        "not JSON": 'plain "token" text',
        "a task whose result has a token": json.dumps({"id": "t-1", "result": {"token": "x"}}),
    }
    with scratch_database(database) as (url, config):
        command.upgrade(config, "0004")
        engine = create_engine(url)
        with engine.begin() as connection:
            for key, body in rows.items():
                connection.execute(
                    text(
                        "INSERT INTO idempotency_keys "
                        "(client, key, fingerprint, status_code, response_body) "
                        "VALUES ('sub:fleet', :key, 'f', 201, :body)"
                    ),
                    {"key": key, "body": body},
                )
        command.upgrade(config, "0005")
        with engine.connect() as connection:
            after = dict(
                connection.execute(text("SELECT key, response_body FROM idempotency_keys")).all()
            )
        assert json.loads(after.pop("registration")) == {
            k: v for k, v in agent.items() if k != "token"
        }
        # the others are untouched: a token deeper down is the client's own data
        assert after == {k: v for k, v in rows.items() if k != "registration"}
        command.downgrade(config, "0004")  # nothing to restore: the tokens are gone for good
        engine.dispose()
