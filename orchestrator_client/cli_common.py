"""What the client commands share: the global `--url` and `--token`, the client they make,
and how an API error ends a command."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time

import click

from orchestrator_client.client import DEFAULT_URL, OrchestratorClient
from orchestrator_client.errors import OrchestratorError, Unauthorized


def _store(ctx: click.Context, param: click.Parameter, value):
    ctx.ensure_object(dict)[param.name] = value
    return value


def connection_options(group):
    """`--url` and `--token` on the group, kept in ctx.obj for the client commands."""
    group = click.option(
        "--token",
        envvar="ORCHESTRATOR_TOKEN",
        show_envvar=True,
        expose_value=False,
        callback=_store,
        help="Bearer token for the API (`orchestrator token` mints one).",
    )(group)
    return click.option(
        "--url",
        envvar="ORCHESTRATOR_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        expose_value=False,
        callback=_store,
        help="The orchestrator API.",
    )(group)


class _StderrLines(logging.Handler):
    """The client library's warnings (a rate-limit wait, a failed heartbeat) as plain
    lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"orchestrator: {record.getMessage()}", err=True)


def _show_client_warnings() -> None:
    library = logging.getLogger("orchestrator_client")
    if not any(isinstance(h, _StderrLines) for h in library.handlers):
        handler = _StderrLines(level=logging.WARNING)
        library.addHandler(handler)
        if library.getEffectiveLevel() > logging.WARNING:
            library.setLevel(logging.WARNING)


def make_client(**options) -> OrchestratorClient:
    _show_client_warnings()
    obj = click.get_current_context().find_object(dict) or {}
    url = obj.get("url") or os.environ.get("ORCHESTRATOR_URL") or DEFAULT_URL
    token = obj.get("token") or os.environ.get("ORCHESTRATOR_TOKEN")
    return OrchestratorClient(url, token, **options)


def api_errors(command):
    """An API error ends the command with its code and message, and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Unauthorized as exc:
            click.echo(f"orchestrator: {exc}", err=True)
            click.echo(
                "orchestrator: this server needs a token: pass one with --token (before the "
                "command: orchestrator --token T status) or set ORCHESTRATOR_TOKEN; "
                "`orchestrator token --role operator --sub you` mints one where "
                "API_SECRET_KEY is set",
                err=True,
            )
            sys.exit(1)
        except OrchestratorError as exc:
            click.echo(f"orchestrator: {exc}", err=True)
            sys.exit(1)

    return wrapper


def upper(_ctx, _param, value):
    return value.strip().upper() if isinstance(value, str) else value


def echo_line(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}")
