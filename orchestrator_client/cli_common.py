"""What the client commands share: the global `--url` and `--token`, the client they make,
and how an API error ends a command."""

from __future__ import annotations

import functools
import os
import sys
import time

import click

from orchestrator_client.client import DEFAULT_URL, OrchestratorClient
from orchestrator_client.errors import OrchestratorError


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


def make_client(**options) -> OrchestratorClient:
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
        except OrchestratorError as exc:
            click.echo(f"orchestrator: {exc}", err=True)
            sys.exit(1)

    return wrapper


def upper(_ctx, _param, value):
    return value.strip().upper() if isinstance(value, str) else value


def echo_line(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}")
