"""`orchestrator logs TASK_ID [--follow]`: a task's log, read page by page from
GET /api/v1/tasks/{id}/logs; with --follow, new lines as they come until the task
finishes (polled: it works with any token that may read the task, an agent's included)."""

from __future__ import annotations

import json
import time

import click

from orchestrator_client.cli_common import api_errors, make_client

FOLLOW_INTERVAL_SECONDS = 1.0


@click.command("logs")
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Print new lines until the task finishes.")
@click.option("--after", default=0, type=click.IntRange(0), help="Start after this line number.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (seq, stream...).")
@click.option(
    "--interval",
    default=FOLLOW_INTERVAL_SECONDS,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between reads while following.",
)
@api_errors
def logs(task_id, follow, after, as_json, interval) -> None:
    """Print a task's log: stdout lines on stdout, stderr and the server's own lines
    (such as the truncation marker) on stderr."""
    client = make_client()
    while True:
        page = client.task_logs(task_id, after=after, limit=1000)
        for line in page["items"]:
            _print(line, as_json)
        after = page["next_after"]
        if page["has_more"]:
            continue
        if not follow or page["finished"]:
            if page.get("pruned"):
                click.echo("orchestrator: this log was removed (retention)", err=True)
            return
        time.sleep(interval)


def _print(line: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(line, ensure_ascii=False))
    else:
        click.echo(line["text"], err=line["stream"] != "stdout")
