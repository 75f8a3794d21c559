"""Behind PgBouncer in transaction mode: no session state outlives a transaction.

A pgbouncer of this test's own (tests/support/pgbouncer.py) with two server connections
stands in front of the test database; the test steers which server connection each
transaction gets, so a statement prepared in one transaction is looked for on the other.
"""

from __future__ import annotations

import io
import os
import re
import tokenize

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from shared.config import ConfigError, Settings
from shared.db import WEB_POOL, WORKER_POOL, Database, keeps_session_state
from shared.enums import AgentType, Capability
from shared.models import WorkSession
from shared.services import agents
from tests.api.helpers import assert_error
from tests.support import ROOT
from tests.support.pgbouncer import direct_server_url, running_pgbouncer


@pytest.fixture
def direct_url(settings) -> str:
    """The test database on PostgreSQL itself (in `make test-pgbouncer` too)."""
    database = make_url(settings.database_url).database
    url = make_url(direct_server_url()).set(database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def agent_id(database):
    with database.transaction() as db:
        agent = agents.register(
            db, name="pooled", type=AgentType.BACKEND, capabilities=[Capability.DEBUGGING]
        )
    return agent.id


def _server_of(session) -> int:
    """The PostgreSQL backend this session's open transaction runs on."""
    return session.scalar(text("SELECT pg_backend_pid()"))


def _heartbeat(session, agent_id, load: int) -> int:
    """A heartbeat in a transaction of its own; the backend it ran on."""
    server = _server_of(session)
    assert agents.heartbeat(session, agent_id=agent_id, current_load=load)["current_load"] == load
    session.commit()
    return server


def _heartbeat_twice_on_two_servers(database: Database, agent_id) -> tuple[int, int]:
    """A heartbeat, then one more on the same client connection but the other server
    connection (the pooler has two): another transaction holds the first meanwhile."""
    with database.engine.connect() as connection:
        beating = database.sessionmaker(bind=connection)
        first = _heartbeat(beating, agent_id, 1)
        holder, spare = database.session(), database.session()
        try:
            if _server_of(holder) != first:  # it took the other: take the first with spare
                assert _server_of(spare) == first
                holder.commit()
            second = _heartbeat(beating, agent_id, 2)
        finally:
            holder.close()
            spare.close()
            beating.close()
    return first, second


@pytest.mark.process  # a pgbouncer process
def test_behind_pgbouncer_the_heartbeat_is_not_prepared_and_works_on_any_server(
    settings, direct_url, agent_id
):
    with running_pgbouncer(direct_url, pool_size=2) as bouncer:
        pooled = Database(settings.with_overrides(database_url=bouncer.url()))
        try:
            with pooled.engine.connect() as connection:
                assert not keeps_session_state(connection)  # auto: found the pooler
            first, second = _heartbeat_twice_on_two_servers(pooled, agent_id)
            assert first != second
            with pooled.session() as session:
                prepared = session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared == 0
        finally:
            pooled.dispose()


@pytest.mark.process
def test_a_statement_prepared_behind_pgbouncer_is_missing_on_the_next_server(
    settings, direct_url, agent_id
):
    """Why the setting exists: told that it may keep prepared statements, the process
    fails as soon as a transaction lands on another server connection."""
    with running_pgbouncer(direct_url, pool_size=2) as bouncer:
        forced = settings.with_overrides(
            database_url=bouncer.url(), database_prepared_statements="true"
        )
        pooled = Database(forced)
        try:
            with pytest.raises(
                DBAPIError, match="prepared statement .agent_heartbeats. does not exist"
            ):
                _heartbeat_twice_on_two_servers(pooled, agent_id)
        finally:
            pooled.dispose()


@pytest.mark.parametrize(
    ("setting", "prepared"), [("auto", True), ("true", True), ("false", False)]
)
def test_a_direct_connection_prepares_the_heartbeat_unless_told_not_to(
    settings, direct_url, agent_id, setting, prepared
):
    direct = Database(
        settings.with_overrides(database_url=direct_url, database_prepared_statements=setting)
    )
    try:
        with direct.session() as session:
            assert keeps_session_state(session.connection()) is prepared
            _heartbeat(session, agent_id, 3)
            names = session.scalars(text("SELECT name FROM pg_prepared_statements")).all()
        assert names == (["agent_heartbeats"] if prepared else [])
    finally:
        direct.dispose()


def test_pool_sizes_are_settings_with_a_default_per_process_kind(settings):
    def pool_of(database: Database) -> tuple[int, int]:
        try:
            return database.engine.pool.size(), database.engine.pool._max_overflow
        finally:
            database.dispose()

    assert pool_of(Database(settings)) == (WEB_POOL.size, WEB_POOL.overflow) == (10, 20)
    assert pool_of(Database(settings, pool=WORKER_POOL)) == (5, 20)
    sized = settings.with_overrides(db_pool_size=3, db_max_overflow=0)
    assert pool_of(Database(sized)) == (3, 0)
    assert pool_of(Database(sized, pool=WORKER_POOL)) == (3, 0)

    from_env = Settings.from_env({"DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "2"})
    assert (from_env.db_pool_size, from_env.db_max_overflow) == (4, 2)


def test_the_worker_uses_the_worker_pool(settings):
    from orchestrator_worker import runtime

    runtime.configure(settings.with_overrides(db_max_overflow=1))
    try:
        pool = runtime.database().engine.pool
        assert (pool.size(), pool._max_overflow) == (WORKER_POOL.size, 1)
    finally:
        runtime.configure(settings)  # as the session's worker (tests/conftest.py) has it


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "0"),  # SQLAlchemy would read 0 as no limit at all
        ("DB_MAX_OVERFLOW", "-1"),  # ... and -1 as no limit on the overflow
        ("DATABASE_PREPARED_STATEMENTS", "sometimes"),
    ],
)
def test_bad_pool_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({name: value})
    assert str(excinfo.value).startswith(name)


def test_a_request_that_finds_no_free_connection_gets_503_and_is_not_done(app, settings, db):
    """A pool sized too small for the load (DB_POOL_SIZE, DB_MAX_OVERFLOW) makes a
    request wait for a connection; when none comes in time: 503 with Retry-After."""
    ext = app.extensions["orchestrator"]
    shared_database = ext.database
    small = Database(settings.with_overrides(db_pool_size=1, db_max_overflow=0), pool_timeout=0.2)
    ext.database = small
    try:
        with small.engine.connect():  # the pool's only connection, busy
            response = app.test_client().post("/api/v1/sessions", json={"title": "waits"})
        error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert "busy" in error["message"]
        assert response.headers["Retry-After"] == "1"
        assert app.test_client().get("/api/v1/sessions").status_code == 200  # free again
    finally:
        ext.database = shared_database
        small.dispose()
    assert db.query(WorkSession).count() == 0


# SQL that leaves state in the database session, which PgBouncer in transaction mode
# would hand to another client's next transaction (SQL is written in capitals here).
SESSION_STATE = {
    "SET without LOCAL": re.compile(r"(?:^|;)\s*SET\s+(?!LOCAL\b|NULL\b|DEFAULT\b)[\w\"]"),
    "session advisory lock": re.compile(r"pg_(?:try_)?advisory_(?:un)?lock(?:_shared)?\s*\("),
    "PREPARE": re.compile(r"(?:^|;)\s*(?:PREPARE|DEALLOCATE)\s+\w"),
    "LISTEN": re.compile(r"(?:^|;)\s*(?:UN)?LISTEN\s+[\w\"{]"),
    "temporary table": re.compile(r"\bCREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s+TABLE"),
    "cursor WITH HOLD": re.compile(r"\bWITH\s+HOLD\b"),
    "set_config for the session": re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I),
}
# The documented exceptions (docs/OPERATIONS.md, "PgBouncer and the connection budget").
ALLOWED = {
    ("PREPARE", "shared/services/agents.py"),  # only where keeps_session_state()
    ("LISTEN", "shared/notify.py"),  # the direct connection, DATABASE_LISTEN_URL
}


def _session_state_in(path: str) -> list[tuple[str, int]]:
    with open(path) as source:
        tokens = list(tokenize.generate_tokens(io.StringIO(source.read()).readline))
    found = []
    for token in tokens:
        if token.type == tokenize.STRING:
            literal = token.string.lstrip("rRbBuUfF").strip("\"'")
            found += [
                (name, token.start[0]) for name, rx in SESSION_STATE.items() if rx.search(literal)
            ]
    return found


def test_no_session_state_outlives_a_transaction_in_the_code():
    """Every SQL string of the server (and its migrations) keeps its state in its
    transaction: SET LOCAL, transaction-level advisory locks, no PREPARE or LISTEN but the
    two documented ones, no temporary tables or held cursors."""
    found = []
    for top in (
        "shared",
        "orchestrator_api",
        "orchestrator_worker",
        "orchestrator_cli",
        "migrations",
    ):
        for directory, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, ROOT)
                found += [
                    (kind, f"{relative}:{line}")
                    for kind, line in _session_state_in(path)
                    if (kind, relative) not in ALLOWED
                ]
    assert found == []
    # the audit finds what it looks for
    assert _session_state_in(os.path.join(ROOT, "shared/notify.py"))[0][0] == "LISTEN"


def test_the_audit_finds_each_kind_of_session_state(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        'a = text("SET statement_timeout = 5")\n'
        'b = "SET LOCAL lock_timeout = 1; SELECT pg_advisory_lock(1)"\n'
        'c = "PREPARE p AS SELECT 1"\n'
        "d = f'LISTEN \"{channel}\"'\n"
        'e = """\n    CREATE TEMP TABLE t AS SELECT 1"""\n'
        'f = "DECLARE c CURSOR WITH HOLD FOR SELECT 1"\n'
        "g = \"SELECT set_config('x', '1', false)\"\n"
        'h = "UPDATE t SET a = 1"  # not session state\n'
        'i = "SET LOCAL synchronous_commit TO OFF"  # not either\n'
    )
    assert sorted(kind for kind, _ in _session_state_in(str(sample))) == sorted(SESSION_STATE)
