"""The `orchestrator` command: one click group for the client commands and the housekeeping."""

from __future__ import annotations

import os
import sys

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orchestrator_client.cli import connection_options, register_commands
from shared import tokens
from shared.config import load_settings_or_exit


@click.group()
@connection_options
def main() -> None:
    """Orchestrator control plane."""


# status, sessions, tasks, agents, agent run, demo: API clients, in orchestrator_client
register_commands(main)


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


@main.command("token")
@click.option("--role", required=True, type=click.Choice(tokens.ROLES), help="The token's role.")
@click.option(
    "--sub",
    help="Who the token is for (its rate-limit client). Not for an agent's token: that is "
    "agent:<ID> (a person's sub may not start with 'agent:').",
)
@click.option("--agent-id", type=click.UUID, help="For role agent: the agent it acts as.")
@click.option(
    "--ttl",
    type=click.IntRange(1),
    default=tokens.DEFAULT_TTL_SECONDS,
    show_default=True,
    help="Lifetime in seconds, at most TOKEN_MAX_TTL_SECONDS (31 days unless set).",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    help="Scope the token to this pool (repeatable): it sees and acts only in these pools.",
)
def token(role: str, sub: str | None, agent_id, ttl: int, pools: tuple[str, ...]) -> None:
    """Print a token signed with API_SECRET_KEY (docs/API.md, "Authentication").

    With --agent-id the token's sub is agent:<ID>, the agent's own identity (its rate
    limit, WebSocket slots and Idempotency-Keys); --sub may then be left out."""
    settings = load_settings_or_exit()
    if agent_id is not None and sub is not None and sub != tokens.agent_sub(agent_id):
        raise click.UsageError(
            f"an agent's token has the sub {tokens.agent_sub(agent_id)}: leave --sub out"
        )
    if agent_id is None and sub is None:
        raise click.UsageError("--sub is required (or --agent-id, for an agent's own token)")
    if ttl > settings.token_max_ttl_seconds:
        raise click.UsageError(
            f"--ttl must be at most {settings.token_max_ttl_seconds} seconds "
            "(TOKEN_MAX_TTL_SECONDS): the API refuses tokens that live longer"
        )
    if not settings.api_secret_key:
        click.echo(
            "orchestrator: warning: API_SECRET_KEY is not set; the token is signed with the "
            "public development key and is only good for a development server",
            err=True,
        )
    try:
        click.echo(
            tokens.mint(
                key=settings.secret_key,
                sub=sub,
                role=role,
                agent_id=agent_id,
                ttl_seconds=ttl,
                max_ttl_seconds=settings.token_max_ttl_seconds,
                pools=pools or None,
            )
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command(
    "flower",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Start Flower behind the basic auth of FLOWER_BASIC_AUTH (user:password[,...]),
    which production requires. Flower reads it from the environment, so the password stays
    out of the command line and `ps`. Other arguments go to `celery flower`."""
    settings = load_settings_or_exit()
    env = dict(os.environ)
    credentials = env.pop("FLOWER_BASIC_AUTH", "").strip()
    if credentials:
        entries = credentials.split(",")
        if not all(user and password for user, _, password in (e.partition(":") for e in entries)):
            _exit("FLOWER_BASIC_AUTH must be user:password, or several separated by commas")
        env["FLOWER_BASIC_AUTH"] = credentials
    elif settings.is_production:
        _exit("FLOWER_BASIC_AUTH (user:password) must be set when ORCHESTRATOR_ENV=production")
    else:
        click.echo(
            "orchestrator: warning: FLOWER_BASIC_AUTH is not set; Flower is open to anyone "
            "who can reach its port",
            err=True,
        )
    command = ["-m", "celery", "-A", "orchestrator_worker.celery_app", "flower", *flower_args]
    os.execve(sys.executable, [sys.executable, *command], env)


def _exit(message: str) -> None:
    click.echo(f"orchestrator: configuration error: {message}", err=True)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
