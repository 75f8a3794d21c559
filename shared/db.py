"""Engine, session factory and the declarative Base."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """One engine and session factory per process (per child after a fork)."""

    def __init__(self, settings: Settings, job_sender=None, **engine_options) -> None:
        from shared import unit_of_work

        self.settings = settings
        self.job_sender = job_sender  # the relay sends webhook deliveries with it
        options = {"pool_size": 10, "max_overflow": 20, "pool_recycle": POOL_RECYCLE_SECONDS}
        options.update(engine_options)
        self.engine: Engine = create_engine(settings.sqlalchemy_url, **options)
        event.listen(self.engine, "checkout", _discard_if_closed_by_server)
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
