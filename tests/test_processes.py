"""The Procfile's processes start from their own command lines and stay up; the compose
file describes the same stack."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests
import yaml

from tests.conftest import ROOT

BIN = os.path.join(ROOT, ".venv", "bin")


def procfile() -> dict[str, str]:
    with open(os.path.join(ROOT, "Procfile")) as handle:
        return dict(
            line.split(":", 1) for line in handle.read().splitlines() if re.match(r"^\w+:", line)
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, settings, **extra_env) -> subprocess.Popen:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT": settings.rate_limit,
        **extra_env,
    }
    # Output goes to a file: an unread pipe would fill up and block the process.
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (the process writes it until stop())
        prefix=f"orchestrator-{name}-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        ["bash", "-c", "exec " + procfile()[name].strip()],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_path = log.name
    return process


def output(process: subprocess.Popen) -> str:
    with open(process.log_path, errors="replace") as handle:
        return handle.read()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(OSError):
        os.unlink(process.log_path)


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, output(process)
        try:
            return requests.get(url, timeout=5)
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@contextlib.contextmanager
def running_web(settings, **extra_env):
    """The Procfile's `web` on a free port, ready; yields its base URL."""
    port = free_port()
    web = start("web", settings, PORT=str(port), **extra_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ready", web)
        yield base
    finally:
        stop(web)


def test_procfile_has_every_process():
    assert set(procfile()) == {"release", "web", "worker", "webhooks", "beat", "flower"}
    assert "-Q webhooks" in procfile()["webhooks"] and "-Q celery" in procfile()["worker"]
    assert "$PORT" in procfile()["web"] or "${PORT" in procfile()["web"]
    assert "FLOWER_PORT" in procfile()["flower"]


def test_web_serves_ready_under_gunicorn(settings):
    port = free_port()
    web = start("web", settings, PORT=str(port), WEB_CONCURRENCY="2")
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/ready", web)
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
        created = requests.post(
            f"http://127.0.0.1:{port}/api/v1/sessions", json={"title": "over HTTP"}, timeout=5
        )
        assert created.status_code == 201
    finally:
        stop(web)


def test_worker_beat_and_flower_start_and_stay_up(settings, tmp_path):
    flower_port = free_port()
    processes = {
        "worker": start("worker", settings, WORKER_CONCURRENCY="1"),
        "beat": start("beat", settings, CELERY_BEAT_SCHEDULE=str(tmp_path / "beat")),
        "flower": start("flower", settings, FLOWER_PORT=str(flower_port)),
    }
    try:
        response = wait_for_http(f"http://127.0.0.1:{flower_port}/healthcheck", processes["flower"])
        assert response.status_code == 200
        time.sleep(3)
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited: {output(process)}"
    finally:
        for process in processes.values():
            stop(process)


def test_release_migrates(settings):
    result = subprocess.run(
        ["bash", "-c", procfile()["release"]],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "DATABASE_URL": settings.database_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def compose():
    with open(os.path.join(ROOT, "docker-compose.yml")) as handle:
        return yaml.safe_load(handle)


def test_compose_runs_the_same_stack(compose):
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "release", "api", "worker", "beat", "flower"}
    for name in ("release", "api", "worker", "beat", "flower"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["REDIS_URL"].startswith("redis://")
    assert services["api"]["depends_on"]["release"]["condition"] == (
        "service_completed_successfully"
    )
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert os.path.exists(os.path.join(ROOT, services["api"]["build"], "Dockerfile"))
