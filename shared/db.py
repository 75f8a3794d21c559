"""Engine, session factory and the declarative Base."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg2 import extensions
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A connection older than this is replaced at checkout (a firewall or proxy may drop one
# that has been open for long without telling either end).
POOL_RECYCLE_SECONDS = 1800


def _discard_if_closed_by_server(dbapi_connection, _record, _proxy) -> None:
    """Instead of a round trip per checkout (pool_pre_ping): an idle connection in the pool
    has nothing to read unless the server ended it (a restart, pg_terminate_backend, an
    idle timeout: it sends its FATAL message and closes). One poll of the socket, no
    round trip; the pool then opens a fresh connection."""
    if dbapi_connection.closed or _readable(dbapi_connection.fileno()):
        raise DisconnectionError("the server closed this connection while it was idle")


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _note_lost_connection(context) -> None:
    """A `handle_error` listener: when an established connection is lost (the server ended
    it, or the network), note on the error whether a transaction had begun on it
    (`transaction_begun`, read by `transaction_begun_when_lost`). psycopg2 sends BEGIN
    ahead of a transaction's first statement and counts the transaction begun only once
    the server has answered it: lost before that, nothing of the transaction ran. (A
    connection in autocommit never begins one.) Costs nothing unless a statement fails."""
    connection = context.connection
    if not context.is_disconnect or connection is None or connection.invalidated:
        return
    if context.sqlalchemy_exception is not None:
        status = connection.connection.dbapi_connection.status
        context.sqlalchemy_exception.transaction_begun = status != extensions.STATUS_READY


def transaction_begun_when_lost(exc: BaseException) -> bool | None:
    """For an error that lost an established connection, whether a transaction had begun
    on it; None for any other error (a connection refused at connect included)."""
    return getattr(exc, "transaction_begun", None)


def _note_session_state(prepared_statements: str):
    """A `connect` listener: whether this connection may keep session state (a prepared
    statement) from one transaction to the next, in `info["session_state"]`. Behind a
    pooler in transaction mode (PgBouncer) the next transaction may run on another server
    connection. `auto` tells them apart by the backend's process id: PostgreSQL names its
    own at connection start, while a pooler hands out a made-up one (PgBouncer: random),
    so the id the server reports differs."""

    def note(dbapi_connection, record) -> None:
        if prepared_statements != "auto":
            record.info["session_state"] = prepared_statements == "true"
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT pg_backend_pid()")
            (server_pid,) = cursor.fetchone()
        finally:
            cursor.close()
            dbapi_connection.rollback()
        record.info["session_state"] = server_pid == dbapi_connection.get_backend_pid()

    return note


def keeps_session_state(connection) -> bool:
    """Whether a SQLAlchemy connection may keep session state between transactions."""
    return bool(connection.info.get("session_state"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class PoolSize:
    """Connections a process keeps open, and how many more it may open under load."""

    size: int
    overflow: int


# Each kind's default, unless DB_POOL_SIZE and DB_MAX_OVERFLOW say otherwise: a web or
# gateway process serves many threads (greenlets) at once; a worker child runs one job
# at a time (the threaded webhooks worker: WEBHOOK_CONCURRENCY of them).
WEB_POOL = PoolSize(10, 20)
WORKER_POOL = PoolSize(5, 20)


class Database:
    """One engine and session factory per process (per child after a fork)."""

    def __init__(
        self, settings: Settings, job_sender=None, *, pool: PoolSize = WEB_POOL, **engine_options
    ) -> None:
        from shared import unit_of_work

        self.settings = settings
        self.job_sender = job_sender  # the relay sends webhook deliveries with it
        options = {
            "pool_size": settings.db_pool_size or pool.size,
            "max_overflow": (
                pool.overflow if settings.db_max_overflow is None else settings.db_max_overflow
            ),
            "pool_recycle": POOL_RECYCLE_SECONDS,
        }
        options.update(engine_options)
        self.engine: Engine = create_engine(settings.sqlalchemy_url, **options)
        event.listen(self.engine, "checkout", _discard_if_closed_by_server)
        event.listen(self.engine, "handle_error", _note_lost_connection)
        event.listen(
            self.engine, "connect", _note_session_state(settings.database_prepared_statements)
        )
        self.sessionmaker = sessionmaker(
            self.engine, expire_on_commit=False, info={"settings": settings}
        )
        unit_of_work.install(self.sessionmaker, job_sender)

    def session(self) -> Session:
        return self.sessionmaker()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit once at the end, roll back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
