"""A connection PostgreSQL ended after the pool handed it to a request (issue 18): a read,
and a write that had sent nothing yet, run once more on a fresh connection instead of
answering 503, counted and logged once; a write that may have written is still a 503
that kept nothing. The connections are ended for real, with pg_terminate_backend, at the
moment named: the pool's own check at checkout (tests/api/test_request_path.py) has
already passed them. On PostgreSQL itself (not in `make test-pgbouncer`: a pooler in
transaction mode hides a server connection ended between transactions)."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from tests.api.helpers import assert_error, request_log_reader


@pytest.fixture(scope="module")
def app(settings, database):
    """The app with a rate limit whose window outlasts the module, to read its count."""
    from orchestrator_api.app import create_app

    flask_app = create_app(settings.with_overrides(rate_limit="1000/hour"))
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


@pytest.fixture
def client(app):
    """A client address of its own: its own rate budget."""
    test_client = app.test_client()
    test_client.environ_base["REMOTE_ADDR"] = "10." + ".".join(
        str(random.randrange(256)) for _ in range(3)
    )
    return test_client


@pytest.fixture
def end_backends(settings, database):
    """`with end_backends(when, times=1):` the first `times` times `when(statement)` is
    true (statement None: the pool hands out a connection, after its own check), every
    backend of the test database is terminated (and waited for), the request's own
    included. Yields the statements (or None) it fired at."""
    admin = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    engine = database.engine

    @contextmanager
    def ending(when=lambda statement: statement is None, times: int = 1):
        fired: list[str | None] = []

        def end_all(statement) -> None:
            if len(fired) < times and when(statement):
                fired.append(statement)
                with admin.connect() as connection:
                    others = "datname = current_database() AND pid <> pg_backend_pid()"
                    ended = connection.scalar(
                        text(
                            "SELECT bool_and(pg_terminate_backend(pid, 5000))"
                            f" FROM pg_stat_activity WHERE {others}"
                        )
                    )
                assert ended

        def at_checkout(_dbapi_connection, _record, _proxy) -> None:
            end_all(None)

        def after_statement(_conn, _cursor, statement, *_args) -> None:
            end_all(statement)

        event.listen(engine, "checkout", at_checkout)
        event.listen(engine, "after_cursor_execute", after_statement)
        try:
            yield fired
        finally:
            event.remove(engine, "checkout", at_checkout)
            event.remove(engine, "after_cursor_execute", after_statement)

    yield ending
    admin.dispose()


@pytest.fixture
def request_lines(caplog):
    return request_log_reader(caplog)


def count(database, table: str) -> int:
    with database.engine.connect() as connection:
        return connection.scalar(text(f"SELECT count(*) FROM {table}"))


def create_session(client, title: str, **headers):
    return client.post("/api/v1/sessions", json={"title": title}, headers=headers)


def test_a_read_whose_connection_was_ended_after_checkout_is_answered_once(
    client, end_backends, request_lines
):
    created = create_session(client, "read me").json
    remaining = int(create_session(client, "other").headers["X-RateLimit-Remaining"])
    url = f"/api/v1/sessions/{created['id']}"
    before = len(request_lines())
    with end_backends() as fired:
        response = client.get(url)
    assert fired == [None]
    assert response.status_code == 200, response.json
    assert (response.json["id"], response.json["title"]) == (created["id"], "read me")
    # counted once by the rate limiter, logged once
    assert int(response.headers["X-RateLimit-Remaining"]) == remaining - 1
    (line,) = request_lines()[before:]
    assert (line["path"], line["status"]) == (url, 200)
    assert client.get("/api/v1/sessions").json["total"] == 2


def test_a_read_that_lost_its_connection_in_authentication_is_answered(client, end_backends):
    """An agent's token is checked against the database before the view (its agent still
    registered): the hooks after the rate limiter run again too."""
    agent = client.post(
        "/api/v1/agents/register",
        json={"name": "a", "type": "BACKEND", "capabilities": ["CODE_GENERATION"]},
    ).json
    with end_backends() as fired:
        response = client.get(
            f"/api/v1/agents/{agent['id']}", headers={"Authorization": f"Bearer {agent['token']}"}
        )
    assert fired == [None]
    assert response.status_code == 200, response.json
    assert response.json["id"] == agent["id"]


@pytest.mark.parametrize("idempotency_key", [None, "retry-once-1"])
def test_a_write_whose_connection_was_ended_before_its_first_statement_runs_once(
    client, database, end_backends, request_lines, idempotency_key
):
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with end_backends() as fired:
        response = create_session(client, "written once", **headers)
    assert fired == [None]
    assert response.status_code == 201, response.json
    assert count(database, "sessions") == 1
    (line,) = request_lines()
    assert (line["method"], line["status"]) == ("POST", 201)
    if idempotency_key:
        assert count(database, "idempotency_keys") == 1
        again = create_session(client, "written once", **headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json["id"] == response.json["id"]
        assert count(database, "sessions") == 1


def test_a_write_that_lost_its_connection_after_writing_is_503_and_keeps_nothing(
    client, database, end_backends
):
    """Not run again (its statements may have run, and a COMMIT lost on the way may have
    committed): the contract's 503, and PostgreSQL rolled back what was written. Here the
    connection is lost in the view, after the Idempotency-Key's claim and the task's
    INSERT; the next test loses it at the commit."""
    session = create_session(client, "half done").json
    events = count(database, "outbox_events")

    def after_the_insert(statement: str | None) -> bool:
        return statement is not None and statement.startswith("INSERT INTO tasks")

    body = {"session_id": session["id"], "title": "t"}
    key = {"Idempotency-Key": "half-done-1"}
    with end_backends(after_the_insert) as fired:
        response = client.post("/api/v1/tasks", json=body, headers=key)
    assert len(fired) == 1
    error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert error["message"] == "The database is unavailable"
    assert response.headers["Retry-After"] == "5"
    assert count(database, "tasks") == count(database, "idempotency_keys") == 0
    assert count(database, "outbox_events") == events
    again = client.post("/api/v1/tasks", json=body, headers=key)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert count(database, "tasks") == 1


def test_a_write_that_lost_its_connection_at_the_commit_is_503_and_keeps_nothing(
    client, database, end_backends
):
    def after_the_insert(statement: str | None) -> bool:
        return statement is not None and statement.startswith("INSERT INTO sessions")

    with end_backends(after_the_insert) as fired:
        response = create_session(client, "half done")
    assert len(fired) == 1
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["Retry-After"] == "5"
    assert count(database, "sessions") == count(database, "outbox_events") == 0
    assert create_session(client, "next").status_code == 201


def test_a_read_is_run_again_once_only(client, end_backends):
    created = create_session(client, "twice lost").json
    with end_backends(times=2) as fired:
        response = client.get(f"/api/v1/sessions/{created['id']}")
    assert fired == [None, None]
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert client.get(f"/api/v1/sessions/{created['id']}").status_code == 200
