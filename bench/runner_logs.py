"""The runner's log latency: from a command's print to a WebSocket subscriber.

The Procfile's `web` (one gunicorn worker) on a database of its own, and a real runner
(`orchestrator agent run --exec`, a subprocess) whose command prints LINES_PER_SECOND
lines a second (10 every 10 ms, each carrying the time it was printed) for SECONDS. A
subscriber on /ws/sessions/{id} takes each `task.log` event and, for every line in it,
measures its arrival minus its print time (same host clock). Goal: p99 <= 500 ms.

Floor, in the same run: the same lines "printed" by the benchmark itself and posted at
once (a batch every 10 ms, no runner, no 250 ms batching), to the same subscriber: what
the server, the outbox relay and the hub cost alone. The difference is the runner's
share (reading the pipes, batching at most every 250 ms, posting).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from bench.common import ROOT, Result, benchmark_database
from bench.stack import web_server
from orchestrator_client import OrchestratorClient
from orchestrator_client.ws_client import Client as WsClient

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
LINES_PER_SECOND = 1000
CHUNK = 10  # lines printed together, every CHUNK / LINES_PER_SECOND seconds
GOAL_P99_MS = 500.0
REDIS_DB = 8
TOTAL = int(SECONDS * LINES_PER_SECOND)
PRINTER = f"""
import sys, time
began = time.time()
for printed in range(0, {TOTAL}, {CHUNK}):
    time.sleep(max(0.0, began + printed / {LINES_PER_SECOND} - time.time()))
    for n in range(printed, printed + {CHUNK}):
        print(f"line {{n}} {{time.time():.6f}} " + "x" * 60)
    sys.stdout.flush()
"""


def run() -> list[Result]:
    env = {"WEB_CONCURRENCY": "1", "WEB_THREADS": "16", "TASK_LOG_MAX_BYTES": str(1024**3)}
    with (
        benchmark_database("runner_logs", REDIS_DB) as settings,
        web_server(settings, **env) as server,
    ):
        api = OrchestratorClient(server.url, timeout=30)
        floor = direct_posts(api)
        print(f"  floor, posted at once: {describe(floor)}")
        measured = through_runner(api)
        print(f"  through the runner: {describe(measured)}")
        api.close()
    p99 = percentile(measured, 99)
    return [
        Result(
            f"runner log latency, print -> WebSocket, {LINES_PER_SECOND:,} lines/s",
            f"p50 {percentile(measured, 50):.0f} ms, p99 {p99:.0f} ms",
            f"posted at once: p50 {percentile(floor, 50):.0f} ms, "
            f"p99 {percentile(floor, 99):.0f} ms",
            f"p99 <= {GOAL_P99_MS:.0f} ms",
            p99 <= GOAL_P99_MS,
        )
    ]


def describe(latencies: list[float]) -> str:
    return (
        f"p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms, "
        f"max {max(latencies):.0f} ms ({len(latencies)} lines)"
    )


def running_task(api: OrchestratorClient, title: str) -> tuple[str, dict]:
    session = api.start_session(api.create_session(title)["id"])
    task = api.create_task(session["id"], title, required_capabilities=["TESTING"])
    return session["id"], task


def direct_posts(api: OrchestratorClient) -> list[float]:
    session_id, task = running_task(api, "floor")
    agent = api.register_agent("bench-poster", "QA", ["TESTING"])
    poster = api.with_token(agent["token"])
    api.assign_task(task["id"], agent["id"])
    poster.start_task(task["id"])
    with Subscriber(api, session_id, task["id"], TOTAL) as subscriber:
        began = time.time()
        for printed in range(0, TOTAL, CHUNK):
            time.sleep(max(0.0, began + printed / LINES_PER_SECOND - time.time()))
            lines = [
                {"stream": "stdout", "text": f"line {n} {time.time():.6f} " + "x" * 60}
                for n in range(printed, printed + CHUNK)
            ]
            poster.append_task_logs(task["id"], lines)
    poster.complete_task(task["id"], {})
    api.deregister_agent(agent["id"])
    poster.close()
    return subscriber.latencies


def through_runner(api: OrchestratorClient) -> list[float]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(PRINTER)
    log = tempfile.NamedTemporaryFile(prefix="bench-runner-", suffix=".log", delete=False)  # noqa: SIM115
    runner = subprocess.Popen(
        [
            os.path.join(ROOT, ".venv", "bin", "orchestrator"),
            "--url",
            api.base_url,
            "agent",
            "run",
            "--name",
            "bench-runner",
            "--capabilities",
            "TESTING",
            "--exec",
            f"{sys.executable} {script.name}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not api.list_agents(status="IDLE")["items"]:
            if runner.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the runner did not register:\n{_read(log.name)}")
            time.sleep(0.1)
        agent_id = api.list_agents(status="IDLE")["items"][0]["id"]
        session_id, task = running_task(api, "runner")
        with Subscriber(api, session_id, task["id"], TOTAL) as subscriber:
            api.assign_task(task["id"], agent_id)
            deadline = time.monotonic() + SECONDS + 30
            while api.get_task(task["id"])["status"] != "COMPLETED":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the task did not complete:\n{_read(log.name)}")
                time.sleep(0.2)
        return subscriber.latencies
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        os.unlink(script.name)
        log.close()
        os.unlink(log.name)


def _read(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()


class Subscriber:
    """/ws/sessions/{id}: for each line of the task's `task.log` events, ms from the time
    printed in it to the event's arrival. Its block ends once `expected` lines arrived
    (or 10 s after the block's body, which raises if lines are missing)."""

    def __init__(self, api: OrchestratorClient, session_id: str, task_id: str, expected: int):
        self.api = api
        self.url = f"{api.ws_url}/ws/sessions/{session_id}"
        self.task_id = task_id
        self.expected = expected
        self.latencies: list[float] = []
        self.done = threading.Event()

    def __enter__(self) -> Subscriber:
        self.socket = WsClient.connect(self.url)
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # subscribed before the first line
        return self

    def listen(self) -> None:
        while not self.done.is_set():
            raw = self.socket.receive(timeout=0.5)
            if not raw:
                continue
            now = time.time()
            message = json.loads(raw)
            payload = message.get("payload") or {}
            if message.get("type") != "task.log" or payload.get("task_id") != self.task_id:
                continue
            lines = payload["lines"]
            if payload["more"]:  # as a follower does: the rest of the batch from GET
                page = self.api.task_logs(self.task_id, after=lines[-1]["seq"], limit=1000)
                lines = lines + page["items"]
                now = time.time()
            for line in lines:
                printed = float(line["text"].split()[2])
                self.latencies.append((now - printed) * 1000)
            if len(self.latencies) >= self.expected:
                self.done.set()

    def __exit__(self, *exc) -> None:
        self.done.wait(10)
        self.done.set()
        self.thread.join()
        self.socket.close()
        if exc[0] is None and len(self.latencies) < self.expected:
            raise AssertionError(
                f"{len(self.latencies)} of {self.expected} lines reached the subscriber"
            )


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]
