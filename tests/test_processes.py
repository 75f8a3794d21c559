"""The Procfile's processes start from their own command lines and stay up; the compose
file describes the same stack."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests
import yaml

from tests.support import ROOT
from tests.support.processes import BIN, free_port, output, procfile, start, stop, wait_for_http


def test_procfile_has_every_process():
    assert set(procfile()) == {
        "release",
        "web",
        "gateway",
        "worker",
        "webhooks",
        "beat",
        "flower",
    }
    assert "gunicorn_gateway.conf.py" in procfile()["gateway"]
    assert "GATEWAY_PORT" in procfile()["gateway"]
    assert "-Q webhooks" in procfile()["webhooks"] and "-Q celery" in procfile()["worker"]
    assert "$PORT" in procfile()["web"] or "${PORT" in procfile()["web"]
    assert "FLOWER_PORT" in procfile()["flower"]


@pytest.mark.process
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


@pytest.mark.process
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
        time.sleep(3)  # they must stay up a while: nothing to wait for but time
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited: {output(process)}"
    finally:
        for process in processes.values():
            stop(process)


@pytest.mark.process
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
    processes = ("release", "api", "gateway", "worker", "webhooks", "beat", "flower")
    assert set(services) >= {"postgres", "redis", *processes}
    assert "webhooks" in services["webhooks"]["command"]
    assert "gunicorn_gateway.conf.py" in services["gateway"]["command"]
    for name in processes:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["REDIS_URL"].startswith("redis://")
    assert services["api"]["depends_on"]["release"]["condition"] == (
        "service_completed_successfully"
    )
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert os.path.exists(os.path.join(ROOT, services["api"]["build"], "Dockerfile"))
