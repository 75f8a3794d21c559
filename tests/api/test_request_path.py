"""The request path's economies (issue 18) keep their promises: reads run outside a
transaction, writes in one; a connection the server ended while it sat in the pool is
replaced, not handed to a request; a page is read whole in one query; heartbeat events
are coalesced."""

from __future__ import annotations

from datetime import timedelta

from psycopg2 import extensions
from sqlalchemy import create_engine, event, func, select, text, update

from shared.models import Agent, OutboxEvent
from shared.models.types import utcnow
from tests.api.helpers import make_session, make_task, register
from tests.support.waiting import wait_for


class Statements:
    """The statements the app's engine runs, with the transaction status of the
    connection just after each (psycopg2: IDLE outside a transaction)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, int]] = []

    def __enter__(self):
        event.listen(self.engine, "after_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc):
        event.remove(self.engine, "after_cursor_execute", self._record)

    def _record(self, connection, _cursor, statement, *_args) -> None:
        status = connection.connection.dbapi_connection.get_transaction_status()
        self.seen.append((statement, status))


def test_a_read_runs_outside_a_transaction_and_a_write_in_one(app, client):
    created = make_session(client)
    engine = app.extensions["orchestrator"].database.engine
    with Statements(engine) as reads:
        assert client.get(f"/api/v1/sessions/{created['id']}").status_code == 200
        assert client.get("/api/v1/tasks?page_size=20").status_code == 200
    assert reads.seen
    assert {status for _, status in reads.seen} == {extensions.TRANSACTION_STATUS_IDLE}
    with Statements(engine) as writes:
        make_session(client)
    assert {status for _, status in writes.seen} == {extensions.TRANSACTION_STATUS_INTRANS}


def test_one_query_for_a_session_and_for_a_page(app, client):
    session = make_session(client)
    first = make_task(client, session["id"])
    make_task(client, session["id"], depends_on=[first["id"]])
    make_task(client, session["id"], parent_id=first["id"])
    engine = app.extensions["orchestrator"].database.engine
    with Statements(engine) as one:
        got = client.get(f"/api/v1/sessions/{session['id']}").json
    assert len(one.seen) == 1 and got["progress"]["total"] == 3
    with Statements(engine) as page:
        sessions = client.get("/api/v1/sessions?page_size=20").json
    assert len(page.seen) == 1 and sessions["total"] == 1
    assert sessions["items"][0]["progress"] == got["progress"]
    with Statements(engine) as tasks_page:
        tasks = client.get(f"/api/v1/tasks?session_id={session['id']}&page_size=20").json
    assert len(tasks_page.seen) == 1 and tasks["total"] == 3
    by_id = {t["id"]: t for t in tasks["items"]}
    assert len(by_id[first["id"]]["subtasks"]) == 1
    assert [t["depends_on"] for t in tasks["items"] if t["depends_on"]] == [[first["id"]]]
    past_the_end = client.get(f"/api/v1/tasks?session_id={session['id']}&page=3&page_size=2")
    assert (past_the_end.json["total"], past_the_end.json["items"]) == (3, [])


def test_connections_ended_by_the_server_are_replaced_before_a_request_gets_one(
    app, client, settings
):
    created = make_session(client)
    for _ in range(3):  # connections into the pool
        assert client.get(f"/api/v1/sessions/{created['id']}").status_code == 200
    admin = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            others = "datname = current_database() AND pid <> pg_backend_pid()"
            ended = connection.scalar(
                text(
                    f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {others}"
                )
            )
            assert ended >= 1
            wait_for(
                lambda: (
                    not connection.scalar(
                        text(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")
                    )
                )
            )
    finally:
        admin.dispose()
    assert client.get(f"/api/v1/sessions/{created['id']}").status_code == 200
    assert make_session(client)["id"]
    assert client.get("/api/v1/sessions").json["total"] == 2


def heartbeat_events(db, agent_id: str) -> int:
    return db.scalar(
        select(func.count())
        .select_from(OutboxEvent)
        .where(
            OutboxEvent.type == "agent.heartbeat",
            OutboxEvent.payload["agent_id"].astext == agent_id,
        )
    )


def test_heartbeat_events_are_recorded_on_a_change_or_once_an_interval(client, db):
    agent = register(client)
    url = f"/api/v1/agents/{agent['id']}/heartbeat"

    def beat(load: int) -> None:
        response = client.post(url, json={"current_load": load})
        assert response.status_code == 200, response.json
        assert response.json["current_load"] == load

    beat(0)  # the first one: an event (the load did not change, but none was recorded yet)
    assert heartbeat_events(db, agent["id"]) == 1
    beat(0)
    beat(0)
    assert heartbeat_events(db, agent["id"]) == 1  # nothing new
    beat(20)
    assert heartbeat_events(db, agent["id"]) == 2  # the load changed
    beat(100)  # BUSY: the status changed too
    assert heartbeat_events(db, agent["id"]) == 3
    beat(100)
    assert heartbeat_events(db, agent["id"]) == 3
    last_beat = db.scalar(select(Agent.last_heartbeat_at).where(Agent.id == agent["id"]))
    assert utcnow() - last_beat < timedelta(seconds=5)  # the heartbeat itself is written
    db.execute(
        update(Agent)
        .where(Agent.id == agent["id"])
        .values(heartbeat_event_at=Agent.heartbeat_event_at - timedelta(seconds=31))
    )
    db.commit()
    beat(100)  # HEARTBEAT_EVENT_INTERVAL_SECONDS (30) since the last one
    assert heartbeat_events(db, agent["id"]) == 4
