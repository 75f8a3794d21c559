"""The Procfile's processes, started as subprocesses of a benchmark and always stopped.

They start as the tests' do (tests/support/processes.py: each in a process group of its
own, its output in a temporary file shown if it dies), on the benchmark's database and
Redis db index.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from celery import Celery

from bench.common import ROOT
from shared.config import Settings
from tests.support.processes import free_port, output, start, stop

# The limiter still counts every request, but never refuses one.
UNLIMITED_RATE = "1000000/second"


@dataclass(frozen=True)
class Server:
    url: str
    label: str  # WORKERSxTHREADS
    process: subprocess.Popen


@contextmanager
def procfile_process(
    name: str, settings: Settings, *, extra_args: str = "", **env: str
) -> Iterator[subprocess.Popen]:
    """The Procfile's `name` line (plus `extra_args`), stopped when the block ends."""
    env = {"ORCHESTRATOR_ENV": "development", "RATE_LIMIT": UNLIMITED_RATE, **env}  # no tokens
    process = start(name, settings, extra_args=extra_args, **env)
    try:
        yield process
    finally:
        stop(process, timeout=30)


@contextmanager
def web_server(
    settings: Settings, workers_threads: tuple[int, int] | None = None, **env: str
) -> Iterator[Server]:
    """The Procfile's `web` (gunicorn), on a free port, once it answers /ready."""
    port = free_port()
    env["PORT"] = str(port)
    if workers_threads:
        env.update(WEB_CONCURRENCY=str(workers_threads[0]), WEB_THREADS=str(workers_threads[1]))
    label = gunicorn_setting({**os.environ, **env}) + ("" if workers_threads else " in effect")
    with procfile_process("web", settings, **env) as process:
        server = Server(f"http://127.0.0.1:{port}", label, process)
        wait_until_ready(server)
        yield server


@contextmanager
def celery_worker(
    settings: Settings, *, include: str | None = None, concurrency: int = 2, **env: str
) -> Iterator[subprocess.Popen]:
    """The Procfile's `worker` (prefork pool of `concurrency`), once it answers a ping;
    `include` names an extra module of jobs to load (`celery worker --include`)."""
    extra_args = f"--include {include}" if include else ""
    env["WORKER_CONCURRENCY"] = str(concurrency)
    with procfile_process("worker", settings, extra_args=extra_args, **env) as process:
        client = Celery("bench", broker=settings.redis_url, set_as_current=False)
        try:
            deadline = time.monotonic() + 60
            while not client.control.ping(timeout=0.5):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Celery worker did not start:\n{output(process)}")
        finally:
            client.close()
        yield process


def gunicorn_setting(env: dict[str, str]) -> str:
    with mock.patch.dict(os.environ, env, clear=True):
        config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return f"{config['workers']}x{config['threads']}"


def wait_until_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{output(server.process)}")
        try:
            with urllib.request.urlopen(f"{server.url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not become ready within {timeout} s")


def worker_pids(server: Server) -> list[int]:
    """gunicorn's worker processes (the children of its master)."""
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of the processes, summed (VmRSS)."""
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
