"""The Procfile's processes as subprocesses of a test (or of a benchmark: bench/stack.py
starts its processes with these too), each in a process group of its own so that stopping
it stops its children (gunicorn workers, Celery's pool), with its output in a file."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis as redis_lib
import requests

from tests.support import ROOT
from tests.support.waiting import wait_for

BIN = os.path.join(ROOT, ".venv", "bin")


def procfile() -> dict[str, str]:
    with open(os.path.join(ROOT, "Procfile")) as handle:
        return dict(
            line.split(":", 1) for line in handle.read().splitlines() if re.match(r"^\w+:", line)
        )


def free_port() -> int:
    """A port free on every address: gunicorn binds 0.0.0.0, which a port that is free on
    127.0.0.1 alone does not ensure (a client socket on another loopback address may
    hold it: bench/gateway.py's clients use 100 of them)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def start(name: str, settings, *, extra_args: str = "", **extra_env) -> subprocess.Popen:
    """The Procfile's `name` line (plus `extra_args`) on `settings`' database and Redis."""
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DATABASE_URL": settings.database_url,
        "DATABASE_LISTEN_URL": settings.database_listen_url,
        "REDIS_URL": settings.redis_url,
        "CELERY_BROKER_URL": settings.celery_broker_url,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT": settings.rate_limit,
        **extra_env,
    }
    # Output goes to a file: an unread pipe would fill up and block the process.
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (the process writes it until stop())
        prefix=f"orchestrator-{name}-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        ["bash", "-c", f"exec {procfile()[name].strip()} {extra_args}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    process.log_path = log.name
    return process


def output(process: subprocess.Popen) -> str:
    with open(process.log_path, errors="replace") as handle:
        return handle.read()


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the process group, SIGKILL if it is not gone within `timeout` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(OSError):
        os.unlink(process.log_path)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> requests.Response:
    """The first answer from `url` (any status), failing if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, output(process)
        try:
            return requests.get(url, timeout=5)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)  # the port is not open yet
    raise AssertionError(f"{url} did not answer")


@contextlib.contextmanager
def running_web(settings, port: int | None = None, **extra_env) -> Iterator[str]:
    """The Procfile's `web` on `port` (default: a free one), ready; yields its base URL."""
    port = port or free_port()
    web = start("web", settings, PORT=str(port), **extra_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ready", web)
        yield base
    finally:
        stop(web)


@contextlib.contextmanager
def running_gateway(settings, port: int | None = None, **extra_env) -> Iterator[str]:
    """The Procfile's `gateway` (gevent) on `port` (default: a free one), ready, beside a
    `web` that relays the events to it (and answers the API, on its own port); yields the
    gateway's base URL, which answers the API too."""
    with serving("gateway", settings, port, **extra_env) as (base, _gateway):
        yield base


@contextlib.contextmanager
def serving(name: str, settings, port: int | None = None, **extra_env):
    """The Procfile's `web` or `gateway` (then beside a `web`, which relays the events) on
    `port` (default: a free one), ready; yields (its base URL, its process)."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        if name == "gateway":
            stack.enter_context(running_web(settings, **extra_env))
            process = start("gateway", settings, GATEWAY_PORT=str(port), **extra_env)
        else:
            process = start(name, settings, PORT=str(port), **extra_env)
        stack.callback(stop, process)
        wait_for_http(f"{base}/ready", process)
        yield base, process


class PrivateRedis:
    """A redis-server of the test's own, on a free port, to kill and start again."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=10)

    def ping(self):
        try:
            return redis_lib.Redis(port=self.port).ping()
        except redis_lib.ConnectionError:
            return False

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"
