"""`orchestrator agent run` (the reference agent) and `orchestrator demo`."""

from __future__ import annotations

import contextlib
import signal
import sys

import click

from orchestrator_client.agent import ReferenceAgent
from orchestrator_client.cli_common import api_errors, echo_line, make_client, upper
from orchestrator_client.demo import DemoFailed, run_demo
from orchestrator_client.runner import CommandRunner


def _interrupt_on_signals() -> None:
    """Ctrl-C, and SIGTERM (a process manager stopping the agent), end it and deregister
    it, even where SIGINT was inherited as ignored (a job started with `&`)."""

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM"):
        # ValueError: not the main thread (embedded use)
        with contextlib.suppress(AttributeError, ValueError):
            signal.signal(getattr(signal, name), handler)


def _drain_on_signals(runner: CommandRunner) -> None:
    """SIGTERM and a first Ctrl-C drain the runner; SIGQUIT and a second Ctrl-C abort."""

    def interrupt(_signum, _frame):
        if runner.draining.is_set():
            runner.abort()
        else:
            runner.echo(f"{runner.name}: finishing running tasks (Ctrl-C again to stop them)")
            runner.drain()

    handlers = {
        "SIGINT": interrupt,
        "SIGTERM": lambda *_: runner.drain(),
        "SIGQUIT": lambda *_: runner.abort(),
    }
    for name, handler in handlers.items():
        with contextlib.suppress(AttributeError, ValueError):
            signal.signal(getattr(signal, name), handler)


def _exit_codes(value: str | None) -> frozenset[int]:
    try:
        codes = frozenset(int(code) for code in (value or "").split(",") if code.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated integers") from None
    if any(not 1 <= code <= 255 for code in codes):
        raise click.BadParameter(f"{value!r}: exit codes are 1 to 255")
    return codes


@click.group("agent")
def agent() -> None:
    """Run a reference agent."""


@agent.command("run")
@click.option("--name", required=True, help="A unique agent name.")
@click.option(
    "--capabilities",
    required=True,
    help="Comma-separated, e.g. CODE_GENERATION,TESTING.",
)
@click.option("--type", "type_", default="FULLSTACK", show_default=True, callback=upper)
@click.option(
    "--max-tasks",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Tasks worked on at once (the agent's max_concurrent_tasks).",
)
@click.option(
    "--work-seconds",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Simulated work per task (not with --exec).",
)
@click.option(
    "--fail-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of tasks failed (as retryable) instead of completed (not with --exec).",
)
@click.option("--heartbeat-seconds", default=5.0, show_default=True, type=click.FloatRange(0.1))
@click.option(
    "--poll-seconds",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Polling period while the event stream is up (2 s while it is down).",
)
@click.option("--stop-after", type=click.IntRange(1), help="Stop after this many tasks.")
@click.option(
    "--pool",
    default=None,
    help="The pool to join (default: `default`): the agent takes only its sessions' tasks.",
)
@click.option("--websocket/--no-websocket", default=True, help="Hear of tasks on the stream.")
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD through the shell for each task (else the work is simulated).",
)
@click.option(
    "--workdir",
    metavar="TEMPLATE",
    help="Each task's working directory, e.g. /srv/work/{task_id}-{attempt} (fields "
    "task_id, session_id, attempt, agent); default: a new temporary directory.",
)
@click.option("--keep-workdir", is_flag=True, help="Keep the working directories the runner made.")
@click.option(
    "--grace-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Between SIGTERM and SIGKILL when a task's command must end.",
)
@click.option(
    "--permanent-exit-codes",
    default="126,127",
    show_default=True,
    callback=lambda _ctx, _param, value: _exit_codes(value),
    help="Exit codes that fail a task for good (others are retryable).",
)
@click.option(
    "--drain-seconds",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="After SIGTERM or a first Ctrl-C: how long running commands may go on.",
)
@api_errors
def agent_run(
    name,
    capabilities,
    type_,
    max_tasks,
    work_seconds,
    fail_rate,
    heartbeat_seconds,
    poll_seconds,
    stop_after,
    websocket,
    pool,
    command,
    workdir,
    keep_workdir,
    grace_seconds,
    permanent_exit_codes,
    drain_seconds,
) -> None:
    """Register an agent and work on the tasks it is given, until Ctrl-C (which
    deregisters it). With --exec, run a command for each task (docs: README, "Real
    agents"): SIGTERM or a first Ctrl-C lets running commands finish, SIGQUIT or a second
    Ctrl-C ends them and hands their tasks back."""
    options = dict(
        agent_type=type_,
        max_tasks=max_tasks,
        heartbeat_seconds=heartbeat_seconds,
        poll_seconds=poll_seconds,
        stop_after=stop_after,
        websocket=websocket,
        echo=echo_line,
        pool=pool,
    )
    if command:
        try:
            worker = CommandRunner(
                make_client(),
                name,
                capabilities.split(","),
                command=command,
                workdir=workdir,
                keep_workdir=keep_workdir,
                grace_seconds=grace_seconds,
                permanent_exit_codes=permanent_exit_codes,
                drain_seconds=drain_seconds,
                **options,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--workdir") from None
        _drain_on_signals(worker)
    else:
        _interrupt_on_signals()
        worker = ReferenceAgent(
            make_client(),
            name,
            capabilities.split(","),
            work_seconds=work_seconds,
            fail_rate=fail_rate,
            **options,
        )
    worker.run()
    echo_line(f"{name}: {len(worker.completed)} completed, {len(worker.failed)} failed")


@click.command("demo")
@click.option(
    "--template",
    default="FEATURE",
    show_default=True,
    callback=upper,
    help="MICROSERVICE, CRUD, FEATURE, BUGFIX, SECURITY or UI.",
)
@click.option("--title", default="Add password reset", show_default=True)
@click.option("--work-seconds", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1))
@api_errors
def demo(template, title, work_seconds, fail_rate, timeout) -> None:
    """Run a session to COMPLETED: a task decomposed with TEMPLATE, three reference
    agents, and the session's progress."""
    client = make_client()
    interactive = sys.stdout.isatty()
    options = dict(
        template=template,
        title=title,
        work_seconds=work_seconds,
        fail_rate=fail_rate,
        timeout=timeout,
    )
    try:
        if interactive:
            with click.progressbar(length=100, label="progress", show_eta=False) as bar:

                def show(session):
                    done = min(100, int(session["progress"]["percent_complete"]))
                    if done > bar.pos:
                        bar.update(done - bar.pos)

                session = run_demo(client, echo=lambda _line: None, on_progress=show, **options)
        else:
            session = run_demo(client, echo=echo_line, on_progress=_ProgressLines(), **options)
    except DemoFailed as exc:
        click.echo(f"demo failed: {exc}", err=True)
        sys.exit(1)
    progress = session["progress"]
    click.echo(
        f"session {session['id']} {session['status']}: "
        f"{progress['by_status'].get('COMPLETED', 0)}/{progress['total']} tasks completed"
    )


class _ProgressLines:
    """Without a terminal: one line a change of the session's progress."""

    def __init__(self) -> None:
        self.last = None

    def __call__(self, session: dict) -> None:
        progress = session["progress"]
        counts = {s: n for s, n in progress["by_status"].items() if n}
        line = f"progress {progress['percent_complete']:g}% {session['status']} {counts}"
        if line != self.last:
            self.last = line
            echo_line(line)
