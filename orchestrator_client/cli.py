"""The client commands of `orchestrator`: status, sessions, tasks, agents, agent run, demo.

They are registered on the group of orchestrator_cli/main.py (`register_commands`), with
the global options `--url` and `--token` (`connection_options`), and talk to the API only
through OrchestratorClient.
"""

from __future__ import annotations

import json
import sys

import click

from orchestrator_client.cli_common import api_errors, connection_options, make_client, upper
from orchestrator_client.cli_logs import logs
from orchestrator_client.cli_run import agent, demo
from orchestrator_client.errors import ConnectionFailed, OrchestratorError

__all__ = ["connection_options", "register_commands"]

STATUSES = {
    "sessions": ("PENDING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED"),
    "agents": ("IDLE", "ACTIVE", "BUSY", "OFFLINE"),
    "tasks": ("PENDING", "BLOCKED", "ASSIGNED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"),
}


def register_commands(group: click.Group) -> None:
    """Add the client commands to `group` (the group of orchestrator_cli/main.py)."""
    for command in (status, sessions, tasks, agents, logs, agent, demo):
        group.add_command(command)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cut(text: str | None, width: int = 40) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 3] + "..."


def _when(stamp: str | None) -> str:
    return (stamp or "-")[:19].replace("T", " ")


def _page_footer(page: dict, noun: str) -> str:
    first = (page["page"] - 1) * page["page_size"] + 1
    more = "; more with --page" if page["has_more"] else ""
    return f"{noun} {first}-{first + len(page['items']) - 1} of {page['total']}{more}"


def _listing(page: dict, as_json: bool, headers: list[str], row, noun: str) -> None:
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    if not page["items"]:
        click.echo(f"no {noun}" + (f" on page {page['page']}" if page["total"] else ""))
        return
    click.echo(_table(headers, [row(item) for item in page["items"]]))
    click.echo(_page_footer(page, noun))


page_options = [
    click.option("--page", default=1, show_default=True, type=click.IntRange(1)),
    click.option("--page-size", default=20, show_default=True, type=click.IntRange(1, 100)),
    click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON."),
]


def with_page_options(command):
    for option in reversed(page_options):
        command = option(command)
    return command


@click.command("status")
@api_errors
def status() -> None:
    """Health, readiness, counts by status, and the job queue's depth."""
    client = make_client(retries=1, timeout=5)
    try:
        health = client.health()
    except ConnectionFailed as exc:
        click.echo(f"API       {client.base_url}: unreachable ({exc.message})")
        sys.exit(1)
    click.echo(f"API       {client.base_url}: {health.get('status')} {health.get('version', '')}")
    ready = True
    try:
        checks = client.ready().get("checks", {})
    except OrchestratorError as exc:
        ready = False
        checks = (exc.body or {}).get("checks", {}) if isinstance(exc.body, dict) else {}
    states = ", ".join(f"{name} {state}" for name, state in checks.items())
    click.echo(f"Ready     {'yes' if ready else 'NO'}{': ' + states if states else ''}")
    for noun, statuses in STATUSES.items():
        lister = getattr(client, f"list_{noun}")
        total = lister(page_size=1)["total"]
        counts = {s: lister(status=s, page_size=1)["total"] for s in statuses}
        detail = ", ".join(f"{s} {n}" for s, n in counts.items() if n)
        click.echo(f"{noun.capitalize():<9} {total}{'  (' + detail + ')' if detail else ''}")
    depth = client.queue_length()
    waiting = "unknown (the broker did not answer)" if depth is None else f"{depth} job(s)"
    click.echo(f"Queue     {waiting} waiting in 'celery'")
    if not ready:
        sys.exit(1)


@click.command("sessions")
@click.option("--status", "status_", metavar="STATUS", callback=upper, help="e.g. RUNNING")
@with_page_options
@api_errors
def sessions(status_, page, page_size, as_json) -> None:
    """List sessions, newest first."""
    result = make_client().list_sessions(status=status_, page=page, page_size=page_size)

    def row(s):
        p = s["progress"]
        done = p["by_status"].get("COMPLETED", 0)
        return [
            s["id"],
            _cut(s["title"]),
            s["status"],
            s["priority"],
            s["type"],
            f"{done}/{p['total']} ({p['percent_complete']:g}%)",
            _when(s["created_at"]),
        ]

    headers = ["ID", "TITLE", "STATUS", "PRIORITY", "TYPE", "TASKS DONE", "CREATED"]
    _listing(result, as_json, headers, row, "sessions")


@click.command("tasks")
@click.option("--session", "session_id", help="Only the tasks of this session.")
@click.option("--status", "status_", metavar="STATUS", callback=upper, help="e.g. PENDING")
@click.option("--agent", "agent_id", help="Only the tasks of this agent.")
@click.option("--parent-only", is_flag=True, help="Only root tasks.")
@with_page_options
@api_errors
def tasks(session_id, status_, agent_id, parent_only, page, page_size, as_json) -> None:
    """List tasks, newest first."""
    result = make_client().list_tasks(
        session_id=session_id,
        status=status_,
        agent_id=agent_id,
        parent_only=parent_only or None,
        page=page,
        page_size=page_size,
    )

    def row(t):
        return [
            t["id"],
            _cut(t["title"]),
            t["status"],
            (t["assigned_agent_id"] or "-")[:8],
            t["attempts"],
            f"{t.get('progress', 0)}%",
            ",".join(t["required_capabilities"]),
        ]

    headers = ["ID", "TITLE", "STATUS", "AGENT", "ATTEMPTS", "PROGRESS", "CAPABILITIES"]
    _listing(result, as_json, headers, row, "tasks")


@click.command("agents")
@click.option("--status", "status_", metavar="STATUS", callback=upper, help="e.g. IDLE")
@click.option("--type", "type_", metavar="TYPE", callback=upper, help="e.g. BACKEND")
@click.option("--capability", metavar="CAPABILITY", callback=upper, help="e.g. TESTING")
@click.option("--available-only", is_flag=True, help="Only online agents with room.")
@with_page_options
@api_errors
def agents(status_, type_, capability, available_only, page, page_size, as_json) -> None:
    """List agents, newest first."""
    result = make_client().list_agents(
        status=status_,
        type=type_,
        capability=capability,
        available_only=available_only or None,
        page=page,
        page_size=page_size,
    )

    def row(a):
        return [
            a["id"],
            _cut(a["name"], 30),
            a["type"],
            a["status"],
            f"{a['active_tasks']}/{a['max_concurrent_tasks']}",
            a["current_load"],
            ",".join(a["capabilities"]),
            _when(a["last_heartbeat_at"]),
        ]

    headers = ["ID", "NAME", "TYPE", "STATUS", "TASKS", "LOAD", "CAPABILITIES", "HEARTBEAT"]
    _listing(result, as_json, headers, row, "agents")
