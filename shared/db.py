"""Engine, session factory and the declarative Base."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """One engine and session factory per process (per child after a fork)."""

    def __init__(self, settings: Settings, job_sender=None, **engine_options) -> None:
        from shared import unit_of_work

        self.settings = settings
        self.job_sender = job_sender  # the relay sends webhook deliveries with it
        options = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
        options.update(engine_options)
        self.engine: Engine = create_engine(settings.sqlalchemy_url, **options)
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
