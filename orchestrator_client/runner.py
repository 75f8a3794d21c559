"""The runner: the reference agent doing real work, a shell command per task
(`orchestrator agent run --exec CMD`), the way a CI runner runs jobs.

For each task it starts, it runs CMD through `/bin/sh -c` in a fresh working directory,
in a process group of its own, with the task in environment variables and as one JSON
document on stdin. What the command prints goes to the task's log (task_output.py);
`::progress N message` lines report progress; exit 0 completes the task (with the JSON
object the command wrote to `$ORCHESTRATOR_RESULT_FILE` as its result, or the exit code
and last lines), any other exit fails it (retryable unless its code is permanent).

A task that stops being its own (cancelled, taken back on a timeout, gone) is noticed by
its stream (`task.status_changed`), by a refused report, or by the poll, each confirmed
with a read of the task: the command's group gets SIGTERM, SIGKILL after
`grace_seconds`, and nothing more is reported for it.

`drain()` (SIGTERM, a first Ctrl-C) stops taking tasks and lets running ones finish, for
at most `drain_seconds`; `abort()` (SIGQUIT, a second Ctrl-C) ends their commands at
once. Either way the runner deregisters, which hands back what it still holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator_client.agent import LOST, ReferenceAgent
from orchestrator_client.errors import AgentNotFound, OrchestratorError
from orchestrator_client.task_output import TaskOutput

log = logging.getLogger(__name__)

RESULT_FILE_MAX_BYTES = 512 * 1024
ERROR_MAX_CHARS = 10_000
NOT_RUNNABLE = {126: "command not executable", 127: "command not found"}
HELD = ("ASSIGNED", "IN_PROGRESS")
PROGRESS_SECONDS = 10.0  # at most one progress report this often per task
# After the command's end, how long its last lines may take to be sent (a 429 on the log
# budget, TASK_LOG_RATE_LIMIT, is waited out within its window, a minute by default).
LOG_FINISH_SECONDS = 65.0


@dataclass
class TaskRun:
    """One task's command, from its start to its report."""

    task_id: str
    attempts: int = 0  # this attempt's number, once started
    lost: str = ""  # why the task is no longer ours; set once
    reporting: bool = False  # its command ended: what follows is its own report
    early_hint: str = ""  # a hint that came while it was being started
    ended: threading.Event = field(default_factory=threading.Event)
    lost_event: threading.Event = field(default_factory=threading.Event)

    def lose(self, why: str) -> None:
        if not self.lost_event.is_set():
            self.lost = why
            self.lost_event.set()


class CommandRunner(ReferenceAgent):
    def __init__(
        self,
        client,
        name: str,
        capabilities: Iterable[str],
        *,
        command: str,
        workdir: str | None = None,
        keep_workdir: bool = False,
        grace_seconds: float = 10.0,
        permanent_exit_codes: Iterable[int] = (),
        drain_seconds: float = 300.0,
        log_flush_seconds: float = 0.25,
        **options: Any,
    ) -> None:
        super().__init__(client, name, capabilities, **options)
        if workdir:
            check_workdir_template(workdir)
        self.command = command
        self.workdir = workdir
        self.keep_workdir = keep_workdir
        self.grace_seconds = grace_seconds
        self.permanent_exit_codes = frozenset(permanent_exit_codes)
        self.drain_seconds = drain_seconds
        self._drain_deadline = float("inf")
        self.log_flush_seconds = log_flush_seconds
        self.runs: dict[str, TaskRun] = {}
        self.draining = threading.Event()
        self.aborting = threading.Event()
        self._beat_now = threading.Event()
        self._prompts: dict[str, str] = {}

    # The runner's own stop

    def drain(self) -> None:
        """Take no more tasks; those running finish (for at most `drain_seconds`)."""
        if not self.draining.is_set():
            self.draining.set()
            self._drain_deadline = time.monotonic() + self.drain_seconds
            self._beat_now.set()  # report full load at once, so nothing more is assigned

    def abort(self) -> None:
        """End the running commands now; deregistering hands their tasks back."""
        self.draining.set()
        self.aborting.set()

    def run(self) -> None:
        self.start()
        try:
            while not self.stopped.wait(0.2):
                if self.aborting.is_set():
                    break
                if self.stop_after is not None and self.finished >= self.stop_after:
                    self.drain()  # those still running finish
                if self.draining.is_set():
                    if not self.running:
                        break
                    if time.monotonic() > self._drain_deadline:
                        self.echo(f"{self.name}: still running after {self.drain_seconds:g}s")
                        break
        finally:
            self.shut_down()

    def shut_down(self) -> None:
        self.draining.set()
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            run.lose("the runner is stopping")
        for run in runs:
            run.ended.wait(self.grace_seconds + 15)
        if runs:
            self.echo(f"{self.name}: handing back {len(runs)} task(s)")
        self.stop()

    def request_stop(self) -> None:
        super().request_stop()
        self._beat_now.set()  # the heartbeat thread ends now, not at its next beat

    @property
    def running(self) -> int:
        with self._lock:
            return len(self.runs)

    @property
    def load(self) -> int:
        return 100 if self.draining.is_set() else super().load

    # Hearing of tasks, and of losing them

    def _heartbeats(self) -> None:
        while not self.stopped.is_set():
            self._beat_now.wait(self.heartbeat_seconds)
            self._beat_now.clear()
            if self.stopped.is_set():
                return
            try:
                self._heartbeat()  # on its stream while that is up, else over HTTP
            except AgentNotFound as exc:  # deregistered elsewhere: its tasks went back
                self.echo(f"{self.name}: the agent is gone ({exc}); stopping")
                self.abort()
            except OrchestratorError as exc:
                self.echo(f"{self.name}: heartbeat failed: {exc}")

    def _offer(self, task_id: str, source: str) -> None:
        if not self.draining.is_set():  # left ASSIGNED: deregistering hands it back
            super()._offer(task_id, source)

    def _on_event(self, event: dict[str, Any]) -> None:
        super()._on_event(event)
        payload = event.get("payload") or {}
        if event.get("type") != "task.status_changed":
            return
        if payload.get("agent_id") == self.id and payload.get("status") in HELD:
            return  # its own assignment and start
        run = self._run_of(payload.get("task_id"))
        if run is not None:
            self._confirm_lost(run, f"task {payload.get('status')}")

    def _polled(self, held: list[dict[str, Any]]) -> None:
        ours = {task["id"] for task in held}
        with self._lock:
            runs = [r for r in self.runs.values() if r.attempts and r.task_id not in ours]
        for run in runs:
            self._confirm_lost(run, "no longer held")

    def _run_of(self, task_id: str | None) -> TaskRun | None:
        with self._lock:
            return self.runs.get(task_id) if task_id else None

    def _confirm_lost(self, run: TaskRun, hint: str) -> None:
        """A hint that a task is no longer ours, checked against the task itself (an old
        event must not end a newer attempt)."""
        if not run.attempts:
            run.early_hint = hint  # confirmed once started (see _do)
            return
        if run.reporting or run.lost_event.is_set():
            return
        try:
            task = self.api.get_task(run.task_id)
        except LOST as exc:
            run.lose(f"{hint} ({exc.__class__.__name__})")
            return
        except OrchestratorError:
            return  # the poll will ask again
        mine = task["assigned_agent_id"] == self.id and task["status"] == "IN_PROGRESS"
        if not mine or task["attempts"] + 1 != run.attempts:
            run.lose(f"task {task['status']}" + (f": {task['error']}" if task["error"] else ""))

    # The work

    def _do(self, task_id: str) -> None:
        if self.draining.is_set():
            return
        run = TaskRun(task_id)
        with self._lock:
            self.runs[task_id] = run
        try:
            try:
                task = self.api.start_task(task_id, agent_id=self.id)
            except LOST:
                return
            run.attempts = task["attempts"] + 1
            if run.early_hint:
                self._confirm_lost(run, run.early_hint)
            try:
                self._execute(run, task)
            except Exception as exc:  # a bug here must not cost the runner a slot
                log.exception("%s: task %s", self.name, task_id)
                if not run.lost_event.is_set():
                    self._report_failure(task, f"runner error: {exc!r}", True)
        finally:
            with self._lock:
                self.runs.pop(task_id, None)
                self._in_flight.discard(task_id)
            run.ended.set()
            if run.lost_event.is_set():
                # an offer of the task again (reassigned to it meanwhile) was ignored while
                # this attempt was ending: look again now
                self._poll_now.set()

    def _execute(self, run: TaskRun, task: dict[str, Any]) -> None:
        title = task["title"]
        began = time.monotonic()
        workdir, made = self._make_workdir(task, run.attempts)
        private = tempfile.mkdtemp(prefix="orchestrator-task-")
        result_file = os.path.join(private, "result.json")
        try:
            try:
                process = subprocess.Popen(
                    self.command,
                    shell=True,
                    cwd=workdir,
                    env=self._environment(task, run.attempts, workdir, result_file),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                self._report_failure(task, f"could not start the command: {exc}", True)
                return
            self.echo(f"{self.name}: running {title!r} (attempt {run.attempts}, pid {process.pid})")
            output = TaskOutput(
                self._log_sender(task["id"]),
                lambda progress, message: self.api.report_progress(
                    task["id"], progress, message, agent_id=self.id
                ),
                lambda exc: self._confirm_lost(run, f"report refused ({exc})"),
                flush_seconds=self.log_flush_seconds,
                # often enough to keep the run deadline moving, rarely enough for RATE_LIMIT
                progress_seconds=min(PROGRESS_SECONDS, task["timeout_seconds"] / 3),
            )
            output.attach(process.stdout, process.stderr, name=f"{self.name}-{title[:20]}")
            _feed(process, task)
            code = self._supervise(process, run)
            if run.lost_event.is_set():
                output.close()
                self.echo(f"{self.name}: {title!r} stopped: {run.lost}")
                return
            run.reporting = True  # a refused report says itself that the task was lost
            output.finish(timeout=LOG_FINISH_SECONDS)
            self._report(task, code, output, result_file, began)
        finally:
            shutil.rmtree(private, ignore_errors=True)
            if made and not self.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _supervise(self, process: subprocess.Popen, run: TaskRun) -> int:
        """Wait for the command (or the loss of its task), then end its whole group."""
        while not run.lost_event.is_set():
            try:
                process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                continue
        # after a normal exit, only strays are left (background children): short shrift
        grace = self.grace_seconds if run.lost_event.is_set() else min(self.grace_seconds, 2.0)
        end_group(process, grace)
        return process.returncode

    def _report(
        self,
        task: dict[str, Any],
        code: int,
        output: TaskOutput,
        result_file: str,
        began: float,
    ) -> None:
        title = task["title"]
        if code == 0:
            result, problem = _read_result(result_file)
            if result is None:
                result = {
                    "exit_code": 0,
                    "last_lines": output.tail(),
                    "seconds": round(time.monotonic() - began, 3),
                }
                if problem:
                    result["result_file_error"] = problem
            try:
                self.api.complete_task(task["id"], result, agent_id=self.id)
                self.completed.append(task["id"])
                self.echo(f"{self.name}: completed {title!r}")
            except LOST as exc:
                self.echo(f"{self.name}: {title!r} was taken away ({exc})")
            return
        if code < 0:
            why, retryable = f"killed by signal {_signal_name(-code)}", True
        else:
            why = f"exit code {code}"
            if code in NOT_RUNNABLE:
                why += f" ({NOT_RUNNABLE[code]}: {self.command!r})"
            elif code > 128 and _signal_name(code - 128) != str(code - 128):
                # the shell's way of saying its command died of signal N
                why += f" (killed by signal {_signal_name(code - 128)})"
            retryable = code not in self.permanent_exit_codes
        stderr = output.tail("stderr")
        error = why + ("\n" + "\n".join(stderr) if stderr else "")
        self._report_failure(task, error[-ERROR_MAX_CHARS:], retryable)

    def _report_failure(self, task: dict[str, Any], error: str, retryable: bool) -> None:
        try:
            self.api.fail_task(task["id"], error, retryable=retryable, agent_id=self.id)
            self.failed.append(task["id"])
            kind = "retryable" if retryable else "permanent"
            self.echo(f"{self.name}: failed {task['title']!r} ({kind}): {error.splitlines()[0]}")
        except LOST as exc:
            self.echo(f"{self.name}: {task['title']!r} was taken away ({exc})")

    # The command's surroundings

    def _log_sender(self, task_id: str):
        append = getattr(self.api, "append_task_logs", None)
        return None if append is None else (lambda lines: append(task_id, lines))

    def _make_workdir(self, task: dict[str, Any], attempt: int) -> tuple[str, bool]:
        """The task's working directory, and whether the runner made it (so removes it)."""
        if not self.workdir:
            return tempfile.mkdtemp(prefix=f"orchestrator-{task['id'][:8]}-"), True
        path = self.workdir.format(
            task_id=task["id"], session_id=task["session_id"], attempt=attempt, agent=self.name
        )
        made = not os.path.exists(path)
        os.makedirs(path, exist_ok=True)
        return path, made

    def _environment(
        self, task: dict[str, Any], attempt: int, workdir: str, result_file: str
    ) -> dict[str, str]:
        return {
            **os.environ,
            "ORCHESTRATOR_TASK_ID": task["id"],
            "ORCHESTRATOR_TASK_TITLE": task["title"],
            "ORCHESTRATOR_TASK_DESCRIPTION": task.get("description") or "",
            "ORCHESTRATOR_SESSION_ID": task["session_id"],
            "ORCHESTRATOR_SESSION_PROMPT": self._session_prompt(task["session_id"]),
            "ORCHESTRATOR_ATTEMPT": str(attempt),
            "ORCHESTRATOR_AGENT_ID": self.id,
            "ORCHESTRATOR_API_URL": self.api.base_url,
            "ORCHESTRATOR_URL": self.api.base_url,  # what the `orchestrator` CLI reads
            "ORCHESTRATOR_TOKEN": self.api.token or "",
            "ORCHESTRATOR_RESULT_FILE": result_file,
            "ORCHESTRATOR_WORKDIR": workdir,
        }

    def _session_prompt(self, session_id: str) -> str:
        """The session's `initial_prompt`, read with the token the runner started with (an
        agent's own token may not read sessions); empty when that token may not either."""
        if session_id not in self._prompts:
            try:
                prompt = self.client.get_session(session_id).get("initial_prompt") or ""
            except OrchestratorError:
                return ""
            self._prompts[session_id] = prompt
        return self._prompts[session_id]


WORKDIR_FIELDS = ("task_id", "session_id", "attempt", "agent")


def check_workdir_template(template: str) -> None:
    """ValueError unless `template` uses only the fields WORKDIR_FIELDS."""
    try:
        template.format(**{name: "x" for name in WORKDIR_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        fields = ", ".join("{" + name + "}" for name in WORKDIR_FIELDS)
        raise ValueError(f"bad --workdir template {template!r} ({exc}); use {fields}") from None


def end_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the command's process group, SIGKILL to what is left after `grace`
    seconds: no process of it survives (but one that left the group with setsid)."""
    group = process.pid
    if not _signal_group(group, signal.SIGTERM):
        process.wait()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reaped, the leader no longer counts as a member
        if not _signal_group(group, 0):
            return
        time.sleep(0.05)
    _signal_group(group, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> bool:
    """False when no process of the group is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _feed(process: subprocess.Popen, task: dict[str, Any]) -> None:
    """The task as JSON on stdin, from a thread: a command that never reads it must not
    block the runner."""

    def write() -> None:
        with contextlib.suppress(OSError, ValueError):
            process.stdin.write(json.dumps(task).encode())
        with contextlib.suppress(OSError, ValueError):
            process.stdin.close()

    threading.Thread(target=write, name=f"stdin-{process.pid}", daemon=True).start()


def _read_result(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object the command wrote to its result file, or why there is none
    (None, None: no file)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None, None
    if size > RESULT_FILE_MAX_BYTES:
        return None, f"the result file is larger than {RESULT_FILE_MAX_BYTES} bytes"
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, f"the result file is not JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"the result file holds a {type(value).__name__}, not a JSON object"
    return value, None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
