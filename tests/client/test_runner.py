"""`orchestrator agent run --exec CMD` as real processes against a real stack (gunicorn,
a Celery worker and beat with one-second sweeps and a three-second heartbeat expiry):
two runners carry out a decomposed session; failures retry or fail for good; cancelled
and timed-out tasks lose their whole process tree; a SIGKILLed runner's task is finished
by another; 100 MB of output leaves the runner's memory flat; SIGTERM drains, SIGQUIT
hands back. The commands are tests/client/runner_task.py, steered by the description."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from orchestrator_client import OrchestratorClient
from tests.support import ROOT
from tests.support.client import tidy
from tests.support.database import empty_tables
from tests.support.processes import BIN, running_web, start, stop
from tests.support.redis_claim import claimed_redis_url
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

COMMAND = f"{sys.executable} {os.path.join(ROOT, 'tests', 'client', 'runner_task.py')}"
STACK_ENV = {
    "SWEEP_INTERVAL_SECONDS": "1",
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "WEB_THREADS": "32",
    "WORKER_CONCURRENCY": "2",
}


@pytest.fixture(scope="module")
def stack_settings(settings, database):
    """The run's database and a Redis db of the stack's own (no other worker takes its
    jobs, so the short expiry settings hold)."""
    empty_tables(database)
    with claimed_redis_url(use_env=False) as redis_url:
        yield settings.with_overrides(redis_url=redis_url)
    empty_tables(database)


@pytest.fixture(scope="module")
def stack(stack_settings, tmp_path_factory):
    """web, worker and beat."""
    with running_web(stack_settings, **STACK_ENV) as base:
        schedule = tmp_path_factory.mktemp("beat") / "schedule"
        worker = start("worker", stack_settings, **STACK_ENV)
        beat = start("beat", stack_settings, CELERY_BEAT_SCHEDULE=str(schedule), **STACK_ENV)
        try:
            yield base
        finally:
            stop(beat)
            stop(worker)


@pytest.fixture
def api(stack):
    client = OrchestratorClient(stack, retries=2, backoff=0.1)
    yield client
    tidy(client)
    client.close()


class Runner:
    """An `orchestrator agent run --exec` process, its output in a file."""

    def __init__(self, base: str, name: str, capabilities: str, *options: str, pids_dir: str):
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (written until the end)
            prefix="runner-", suffix=".log", delete=False
        )
        command = [
            os.path.join(BIN, "orchestrator"),
            "--url",
            base,
            "agent",
            "run",
            "--name",
            self.name,
            "--capabilities",
            capabilities,
            "--heartbeat-seconds",
            "0.5",
            "--poll-seconds",
            "1",
            "--grace-seconds",
            "1",
            *options,
        ]
        if "--exec" not in options:
            command += ["--exec", COMMAND]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "RUNNER_TEST_DIR": pids_dir},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.id: str | None = None

    def registered(self, api: OrchestratorClient) -> str:
        agent = wait_for(
            lambda: next((a for a in api.list_agents()["items"] if a["name"] == self.name), None)
        )
        self.id = agent["id"]
        return self.id

    def output(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def memory_kb(self, field: str) -> int:
        """VmRSS (now) or VmHWM (the peak) of the runner process."""
        with open(f"/proc/{self.process.pid}/status") as handle:
            line = next(ln for ln in handle if ln.startswith(field + ":"))
        return int(line.split()[1])

    def signal(self, signum: int) -> int:
        """Send `signum`, return the exit status."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def pids_dir(tmp_path):
    """Where the commands record their process ids (`<task id>-<attempt>.pids`); every
    process recorded is killed at the end, should a test fail with one alive."""
    yield str(tmp_path)
    for path in tmp_path.glob("*.pids"):
        for pid in _pids(str(path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runners(stack, api, pids_dir):
    started: list[Runner] = []

    def make(name: str, capabilities: str, *options: str) -> Runner:
        runner = Runner(stack, name, capabilities, *options, pids_dir=pids_dir)
        started.append(runner)
        runner.registered(api)
        return runner

    yield make
    for runner in started:
        runner.end()
        print(f"== {runner.name}\n{runner.output()}")  # shown when the test failed
        os.unlink(runner.log.name)


def _pids(path: str) -> list[int]:
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]


def pids_of(pids_dir: str, task_id: str, attempt: int = 1, timeout: float = 20) -> list[int]:
    path = os.path.join(pids_dir, f"{task_id}-{attempt}.pids")
    wait_for(lambda: os.path.exists(path), timeout=timeout)
    return _pids(path)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def running_session(api, title: str, **options) -> str:
    return api.start_session(api.create_session(title, **options)["id"])["id"]


def settled(api, task_id: str, timeout: float = 30) -> dict:
    finished = ("COMPLETED", "FAILED", "CANCELLED")
    return wait_for(
        lambda: (task := api.get_task(task_id))["status"] in finished and task, timeout=timeout
    )


def test_two_runners_carry_out_a_decomposed_session(api, stack, runners):
    designer = runners("designer", "SYSTEM_DESIGN,TESTING,CODE_REVIEW")
    builder = runners("builder", "CODE_GENERATION,DOCUMENTATION", "--max-tasks", "2")
    sid = running_session(api, "runner demo", initial_prompt="Build a search page")
    parent = api.create_task(sid, "Add search", description="ok")
    api.decompose_task(parent["id"], "FEATURE")

    assert settled(api, parent["id"], timeout=60)["status"] == "COMPLETED"
    assert api.complete_session(sid)["status"] == "COMPLETED"
    subtasks = [t for t in api.list_tasks(session_id=sid, page_size=100)["items"] if t["parent_id"]]
    assert len(subtasks) == 5 and {t["status"] for t in subtasks} == {"COMPLETED"}
    assert {t["assigned_agent_id"] for t in subtasks} == {designer.id, builder.id}
    for task in subtasks:
        result = task["result"]
        assert result["task_id"] == result["stdin_id"] == task["id"], result
        assert result["title"] == task["title"] and result["description"] == "ok"
        assert result["session_id"] == sid and result["prompt"] == "Build a search page"
        assert result["attempt"] == 1 and result["api_url"] == stack and result["has_token"]
        assert not os.path.exists(result["cwd"]), "the temporary working directory is removed"
    assert len({t["result"]["cwd"] for t in subtasks}) == 5, "a fresh directory per task"
    for task in subtasks:  # what each command printed, in the task's log
        lines = [(line["stream"], line["text"]) for line in api.task_logs(task["id"])["items"]]
        stdout = [text for stream, text in lines if stream == "stdout"]
        assert stdout == [f"working on {task['title']}", "::progress 50 halfway"], lines
        assert [text for stream, text in lines if stream == "stderr"] == ["a warning"]
    for runner in (designer, builder):
        assert runner.signal(signal.SIGTERM) == 0
        assert f"{runner.name}: deregistered" in runner.output()


def test_failures_retry_or_fail_for_good(api, runners):
    workdirs = tempfile.mkdtemp(prefix="runner-workdirs-")
    template = os.path.join(workdirs, "{task_id}-{attempt}")
    runner = runners(
        "failing", "TESTING", "--permanent-exit-codes", "5", "--workdir", template, "--keep-workdir"
    )
    sid = running_session(api, "retries")
    flaky = api.create_task(sid, "flaky", description="flaky", required_capabilities=["TESTING"])
    silent = api.create_task(sid, "silent", description="silent", required_capabilities=["TESTING"])
    killed = api.create_task(sid, "killed", description="killed", required_capabilities=["TESTING"])
    flaky = settled(api, flaky["id"])
    assert flaky["status"] == "COMPLETED" and flaky["attempts"] == 1, flaky
    assert flaky["result"]["attempt"] == 2
    assert flaky["result"]["cwd"] == os.path.join(workdirs, f"{flaky['id']}-2")
    # a directory per attempt, kept (the other tasks' are there too)
    assert {f"{flaky['id']}-{n}" for n in (1, 2)} <= set(os.listdir(workdirs))
    assert flaky["error"].startswith("exit code 3\n") and "first attempt fails" in flaky["error"]
    killed = settled(api, killed["id"])
    assert (killed["status"], killed["attempts"]) == ("COMPLETED", 1), killed
    # the shell says 128 + 9, and "Killed" on stderr
    assert killed["error"] == "exit code 137 (killed by signal SIGKILL)\nKilled"
    silent = settled(api, silent["id"])
    assert silent["status"] == "COMPLETED"
    assert silent["result"]["exit_code"] == 0
    assert silent["result"]["last_lines"] == ["line one", "line two"]

    # 5 is permanent: failed at once; 4 is not: retried until TASK_MAX_ATTEMPTS (3)
    permanent = api.create_task(
        running_session(api, "permanent"), "p", description="permanent 5",
        required_capabilities=["TESTING"],
    )  # fmt: skip
    permanent = settled(api, permanent["id"])
    assert (permanent["status"], permanent["attempts"]) == ("FAILED", 1), permanent
    assert permanent["error"] == "exit code 5\nbroken for good"
    retried = api.create_task(
        running_session(api, "retried"), "r", description="permanent 4",
        required_capabilities=["TESTING"],
    )  # fmt: skip
    retried = settled(api, retried["id"])
    assert (retried["status"], retried["attempts"]) == ("FAILED", 3), retried
    assert runner.process.poll() is None
    shutil.rmtree(workdirs)


def test_a_command_that_does_not_exist_fails_its_task_clearly(api, runners):
    runner = runners("misconfigured", "DEPLOYMENT", "--exec", "no-such-command-here --flag")
    for n in range(2):  # and the runner goes on to the next
        task = api.create_task(
            running_session(api, f"missing {n}"), "deploy", required_capabilities=["DEPLOYMENT"]
        )
        task = settled(api, task["id"])
        assert (task["status"], task["attempts"]) == ("FAILED", 1), task
        assert task["error"].startswith(
            "exit code 127 (command not found: 'no-such-command-here --flag')"
        )
        assert "no-such-command-here" in task["error"].split("\n", 1)[1]  # the shell's words
    assert runner.process.poll() is None


def test_cancel_and_timeout_kill_the_whole_process_tree(api, runners, pids_dir):
    runner = runners("killer", "TESTING")
    sid = running_session(api, "cancelled")
    task = api.create_task(sid, "tree", description="tree", required_capabilities=["TESTING"])
    pids = pids_of(pids_dir, task["id"])
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    api.cancel_task(task["id"])
    # SIGTERM is ignored by all three; SIGKILL follows after --grace-seconds 1
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
    wait_for(lambda: "'tree' stopped: task CANCELLED" in runner.output())
    assert api.get_task(task["id"])["status"] == "CANCELLED"

    timed = api.create_task(
        sid, "tree", description="tree", required_capabilities=["TESTING"], timeout_seconds=2
    )
    pids = pids_of(pids_dir, timed["id"])
    wait_for(lambda: "run timeout" in (api.get_task(timed["id"])["error"] or ""), timeout=15)
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
    again = pids_of(pids_dir, timed["id"], attempt=2)  # offered again, run again
    api.cancel_session(sid)
    wait_for(lambda: not any(alive(pid) for pid in again), timeout=10)

    follow = api.create_task(
        running_session(api, "after"), "fine", description="ok", required_capabilities=["TESTING"]
    )
    assert settled(api, follow["id"])["status"] == "COMPLETED"


def test_a_sigkilled_runners_task_is_finished_by_another(api, runners, pids_dir):
    doomed = runners("doomed", "DEPLOYMENT")
    task = api.create_task(
        running_session(api, "survives"), "deploy", description="sleep 4",
        required_capabilities=["DEPLOYMENT"],
    )  # fmt: skip
    pids_of(pids_dir, task["id"])
    assert api.get_task(task["id"])["assigned_agent_id"] == doomed.id
    assert doomed.signal(signal.SIGKILL) == -signal.SIGKILL
    rescuer = runners("rescuer", "DEPLOYMENT")
    task = settled(api, task["id"], timeout=40)  # expiry (3 s) + a sweep + 4 s of work
    assert task["status"] == "COMPLETED" and task["assigned_agent_id"] == rescuer.id, task
    assert task["attempts"] == 1 and task["result"]["attempt"] == 2
    assert api.get_agent(doomed.id)["status"] == "OFFLINE"


def test_a_flood_of_output_leaves_the_runner_flat(api, runners):
    runner = runners("flooded", "TESTING")
    before = runner.memory_kb("VmRSS")
    task = api.create_task(
        running_session(api, "flood"), "flood", description="flood 100",
        required_capabilities=["TESTING"],
    )  # fmt: skip
    task = settled(api, task["id"], timeout=60)
    assert task["status"] == "COMPLETED" and task["result"]["flooded"], task
    grown = runner.memory_kb("VmHWM") - before
    print(f"the runner's peak RSS grew by {grown} kB over {before} kB reading 100 MB")
    assert grown < 30_000, f"the runner grew by {grown} kB reading 100 MB"
    log = api.task_logs(task["id"], limit=1000)
    assert log["truncated"] and log["finished"]
    page, stored = log, 0
    while True:
        stored += sum(len(line["text"]) for line in page["items"])
        if not page["has_more"]:
            break
        page = api.task_logs(task["id"], after=page["next_after"], limit=1000)
    assert stored <= 1024 * 1024 + 200, "TASK_LOG_MAX_BYTES and one marker line"
    assert page["items"][-1]["stream"] == "system" and "truncated" in page["items"][-1]["text"]


def test_sigterm_drains_and_sigquit_hands_back(api, runners, pids_dir):
    draining = runners("draining", "TESTING")
    sid = running_session(api, "signals")
    task = api.create_task(sid, "slow", description="sleep 2", required_capabilities=["TESTING"])
    pids_of(pids_dir, task["id"])
    draining.process.send_signal(signal.SIGTERM)
    wait_for(lambda: api.get_agent(draining.id)["status"] == "BUSY", timeout=5)  # no more
    assert draining.process.wait(timeout=20) == 0
    assert api.get_task(task["id"])["status"] == "COMPLETED", "it was let finish"
    assert api.get_agent(draining.id)["deregistered_at"]

    aborting = runners("aborting", "TESTING")
    task = api.create_task(sid, "tree", description="tree", required_capabilities=["TESTING"])
    pids = pids_of(pids_dir, task["id"])
    assert aborting.signal(signal.SIGQUIT) == 0
    assert not any(alive(pid) for pid in pids)
    task = api.get_task(task["id"])
    assert (task["status"], task["attempts"]) == ("PENDING", 1), task
    assert "deregistered" in task["error"]
    assert "handing back 1 task(s)" in aborting.output()


def test_a_log_is_followed_live_over_the_session_stream(api, runners):
    runners("talker", "TESTING")
    sid = running_session(api, "live log")
    heard: list[tuple[float, dict]] = []
    stream = api.events(f"/ws/sessions/{sid}")
    listener = threading.Thread(
        target=lambda: heard.extend((time.time(), event) for event in stream), daemon=True
    )
    listener.start()
    wait_for(lambda: stream.connected.is_set())
    task = api.create_task(sid, "talk", description="live 40", required_capabilities=["TESTING"])
    assert settled(api, task["id"])["status"] == "COMPLETED"
    wait_for(
        lambda: any(
            e["type"] == "task.status_changed" and e["payload"]["status"] == "COMPLETED"
            for _, e in heard
        )
    )
    stream.close()

    types = [event["type"] for _, event in heard]
    completed = next(
        n for n, (_, e) in enumerate(heard) if e["type"] == "task.status_changed"
        and e["payload"]["status"] == "COMPLETED"
    )  # fmt: skip
    logs = [(at, e["payload"]) for at, e in heard if e["type"] == "task.log"]
    assert len(logs) >= 2 and types.index("task.log") < completed, "heard while it ran"
    lines = [line for _, payload in logs for line in payload["lines"]]
    assert [line["text"].split()[:2] for line in lines] == [["live", str(n)] for n in range(40)]
    assert [line["seq"] for line in lines] == list(range(1, 41))
    for heard_at, payload in logs:  # printed (its time in the line) to heard: well under 1 s
        for line in payload["lines"]:
            assert heard_at - float(line["text"].split()[2]) < 1.0, line
    stored = api.task_logs(task["id"])["items"]
    assert [line["text"] for line in stored] == [line["text"] for line in lines]


def test_the_readme_runs_a_session_with_two_runners(api, stack):
    # the module's earlier sessions are over: the README's runners must find only its work
    for status in ("PENDING", "RUNNING", "PAUSED"):
        for leftover in api.list_sessions(status=status, page_size=100)["items"]:
            api.cancel_session(leftover["id"])
    with open(os.path.join(ROOT, "README.md")) as handle:
        section = handle.read().split("## Real agents: a command per task", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    finished = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("http://localhost:8000", stack)],
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    lines = [line for line in finished.stdout.splitlines() if not line[:2].isdigit()]
    assert lines[0] == "COMPLETED", finished.stdout
    pattern = r"COMPLETED (.+): done \| attempt 1 of '\1' in /\S+"
    titles = sorted(re.fullmatch(pattern, line).group(1) for line in lines[1:])
    steps = ("Design", "Document", "Implement", "Review", "Write tests")
    assert titles == [f"{step}: Add search" for step in steps], finished.stdout
    assert finished.stdout.count(": deregistered") == 2, "SIGTERM drained both, then deregistered"


def test_ctrl_c_drains_and_a_second_ctrl_c_hands_back(api, runners, pids_dir):
    runner = runners("interrupted", "TESTING")
    task = api.create_task(
        running_session(api, "ctrl-c"), "tree", description="tree",
        required_capabilities=["TESTING"],
    )  # fmt: skip
    pids = pids_of(pids_dir, task["id"])
    runner.process.send_signal(signal.SIGINT)
    wait_for(lambda: "finishing running tasks (Ctrl-C again to stop them)" in runner.output())
    assert all(alive(pid) for pid in pids), "the first Ctrl-C lets the command run"
    assert runner.signal(signal.SIGINT) == 0
    assert not any(alive(pid) for pid in pids)
    assert api.get_task(task["id"])["status"] == "PENDING"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--workdir", "/tmp/{task}", "bad --workdir template"),
        ("--permanent-exit-codes", "5,x", "comma-separated integers"),
        ("--permanent-exit-codes", "0", "exit codes are 1 to 255"),
    ],
)
def test_bad_runner_options_are_refused(option, value, message):
    from click.testing import CliRunner

    from orchestrator_cli.main import main

    args = ["agent", "run", "--name", "n", "--capabilities", "TESTING", "--exec", "true"]
    result = CliRunner().invoke(main, ["--url", "http://127.0.0.1:9", *args, option, value])
    assert result.exit_code == 2 and message in result.output, result.output


def test_commands_run_side_by_side_up_to_max_tasks(api, runners, pids_dir):
    runners("parallel", "TESTING", "--max-tasks", "2")
    sid = running_session(api, "parallel")
    tasks = [
        api.create_task(sid, f"slow {n}", description="sleep 30", required_capabilities=["TESTING"])
        for n in range(3)
    ]
    wait_for(
        lambda: sum(os.path.exists(os.path.join(pids_dir, f"{t['id']}-1.pids")) for t in tasks) == 2
    )
    running = [pid for t in tasks if os.path.exists(os.path.join(pids_dir, f"{t['id']}-1.pids"))
               for pid in pids_of(pids_dir, t["id"])]  # fmt: skip
    assert all(alive(pid) for pid in running)
    statuses = sorted(api.get_task(t["id"])["status"] for t in tasks)
    assert statuses == ["IN_PROGRESS", "IN_PROGRESS", "PENDING"]
    api.cancel_session(sid)  # through its session: both commands end
    wait_for(lambda: not any(alive(pid) for pid in running), timeout=10)


def test_without_its_stream_the_runner_learns_of_a_cancel_by_polling(api, runners, pids_dir):
    runner = runners("polling", "TESTING", "--no-websocket")
    task = api.create_task(
        running_session(api, "polled"), "tree", description="tree",
        required_capabilities=["TESTING"],
    )  # fmt: skip
    pids = pids_of(pids_dir, task["id"])
    api.cancel_task(task["id"])
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)  # a poll every 2 s
    assert "'tree' stopped: task CANCELLED" in runner.output()  # no stream: the poll
