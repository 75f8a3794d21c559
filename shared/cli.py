"""The `orchestrator` command."""

from __future__ import annotations

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.config import load_settings_or_exit


@click.group()
def main() -> None:
    """Orchestrator control plane."""


@main.group()
def db() -> None:
    """Database housekeeping."""


@db.command("create")
def db_create() -> None:
    """Create the database named in DATABASE_URL if it does not exist."""
    url = make_url(load_settings_or_exit().sqlalchemy_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
            click.echo(f"created database {url.database}")
    admin.dispose()


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema."""
    from alembic import command
    from alembic.config import Config

    command.upgrade(Config("alembic.ini"), "head")


if __name__ == "__main__":
    main()
