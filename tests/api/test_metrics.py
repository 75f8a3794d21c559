"""GET /metrics (orchestrator_api/metrics.py, shared/metrics.py): in process, and over the
Procfile's gunicorn with two workers whose counts are summed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import pytest
import requests

from orchestrator_client.ws_client import Client
from shared import metrics_dir
from tests.api.helpers import act, make_session, make_task, register, start_session
from tests.support.metrics import parse
from tests.support.processes import free_port, start, stop, wait_for_http
from tests.support.rabbitmq import own_vhost
from tests.support.waiting import wait_for

SESSIONS_OK = ("orchestrator_http_requests_total", "GET", "/api/v1/sessions", "200")


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def make_app(settings, **overrides):
    from orchestrator_api.app import create_app

    return create_app(settings.with_overrides(**overrides))


def test_gauges_by_pool(client):
    red = make_session(client, pool="red")
    make_session(client)
    for _ in range(3):
        make_task(client, red["id"])
    cancelled = make_task(client, red["id"])
    act(client, cancelled["id"], "cancel")
    register(client, name="red-1", pool="red")
    register(client, name="blue-1", pool="blue")
    gone = register(client, name="blue-2", pool="blue")
    assert client.delete(f"/api/v1/agents/{gone['id']}").status_code == 204
    samples = scrape(client)
    assert samples[("orchestrator_pool_tasks", "red", "PENDING")] == 3  # the red queue
    assert samples[("orchestrator_pool_tasks", "red", "ASSIGNED")] == 0
    assert ("orchestrator_pool_tasks", "red", "CANCELLED") not in samples  # unfinished only
    assert ("orchestrator_pool_tasks", "default", "PENDING") not in samples  # no tasks there
    assert samples[("orchestrator_pool_agents", "red", "IDLE")] == 1
    assert samples[("orchestrator_pool_agents", "blue", "IDLE")] == 1  # the record not counted


def test_task_and_agent_gauges_are_the_database(client):
    register(client, name="a-1")
    register(client, name="a-2")
    gone = register(client, name="a-3")
    assert client.delete(f"/api/v1/agents/{gone['id']}").status_code == 204  # a record now
    session = make_session(client)
    tasks = [make_task(client, session["id"]) for _ in range(3)]
    act(client, tasks[0]["id"], "cancel")
    samples = scrape(client)
    assert samples[("orchestrator_tasks", "PENDING")] == 2
    assert samples[("orchestrator_tasks", "CANCELLED")] == 1
    assert samples[("orchestrator_tasks", "ASSIGNED")] == 0  # every status, even at 0
    assert samples[("orchestrator_agents", "IDLE")] == 2
    assert samples[("orchestrator_agents", "OFFLINE")] == 0
    assert samples[("orchestrator_metrics_source_up", "database")] == 1
    assert samples[("orchestrator_metrics_source_up", "broker")] == 1


def test_requests_are_counted_by_route_not_path(client):
    route = ("GET", "/api/v1/sessions/<session_id>", "404")
    before = scrape(client).get(("orchestrator_http_requests_total", *route), 0)
    for _ in range(3):
        client.get(f"/api/v1/sessions/{uuid.uuid4()}")
    samples = scrape(client)
    assert samples[("orchestrator_http_requests_total", *route)] == before + 3
    assert samples[("orchestrator_http_request_duration_seconds_count", *route)] >= 3
    assert not [
        key
        for key in samples
        if any(str(part).startswith("/api/v1/sessions/") and "<" not in str(part) for part in key)
    ]


def test_an_http_assignment_observes_its_latency(client):
    key = ("orchestrator_assignment_latency_seconds_count", "first")
    before = scrape(client).get(key, 0)
    session = start_session(client)
    register(client)
    task = make_task(client, session["id"])
    assert act(client, task["id"], "assign").status_code == 200
    assert scrape(client)[key] == before + 1


def test_queue_length_is_what_the_broker_holds(settings, spare_redis_url):
    """A broker of its own (a spare Redis db, or with RabbitMQ a vhost of its own): no
    worker consumes the job that registering an agent sends."""
    if settings.celery_broker_url.startswith("amqp"):
        with own_vhost(settings.celery_broker_url) as broker_url:
            _count_one_queued_job(settings, celery_broker_url=broker_url)
    else:
        _count_one_queued_job(settings, redis_url=spare_redis_url)


def _count_one_queued_job(settings, **broker) -> None:
    flask_app = make_app(settings, **broker)
    try:
        client = flask_app.test_client()
        assert scrape(client)[("orchestrator_celery_queue_length", "celery")] == 0
        register(client)
        assert scrape(client)[("orchestrator_celery_queue_length", "celery")] == 1
    finally:
        flask_app.extensions["orchestrator"].database.dispose()


def test_a_source_that_does_not_answer_does_not_fail_the_scrape(settings):
    missing_database = settings.database_url.rsplit("/", 1)[0] + "/no_such_database"
    flask_app = make_app(
        settings,
        database_url=missing_database,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        celery_broker_url="",  # the broker is REDIS_URL's: away too
    )
    samples = scrape(flask_app.test_client())
    assert samples[("orchestrator_metrics_source_up", "database")] == 0
    assert samples[("orchestrator_metrics_source_up", "broker")] == 0
    assert ("orchestrator_tasks", "PENDING") not in samples
    assert ("orchestrator_celery_queue_length", "celery") not in samples


def test_metrics_is_open_and_not_rate_limited_in_production(settings, database):
    flask_app = make_app(
        settings, orchestrator_env="production", api_secret_key="m" * 40, rate_limit="2/minute"
    )
    flask_app.extensions["orchestrator"].database = database
    client = flask_app.test_client()
    for _ in range(5):
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers
    assert client.get("/api/v1/sessions").status_code == 401


# Over gunicorn -------------------------------------------------------------------------


def _answered_by(access_log, path: str) -> set[str]:
    if not os.path.exists(access_log):
        return set()
    with open(access_log) as log:
        return {line.split()[0] for line in log if line.split()[2:3] == [path]}


def _worker_pids(master_pid: int) -> list[int]:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as children:
        return [int(pid) for pid in children.read().split()]


@pytest.fixture
def web(settings, tmp_path):
    """The Procfile's web with two workers, an access log of which worker answered, and
    its own temp dir (where gunicorn.conf.py makes the multiprocess directory)."""
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    access_log = tmp_path / "access.log"
    process = start(
        "web",
        settings,
        PORT=str(port),
        WEB_CONCURRENCY="2",
        TMPDIR=str(temp),
        GUNICORN_CMD_ARGS=f"--access-logfile {access_log} --access-logformat '%(p)s %(s)s %(U)s'",
    )
    process.base = f"http://127.0.0.1:{port}"
    process.access_log = access_log
    process.temp = temp
    try:
        wait_for_http(f"{process.base}/ready", process)
        yield process
    finally:
        stop(process)


def http_scrape(base: str) -> dict[tuple, float]:
    response = requests.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


@pytest.mark.process
def test_gunicorn_workers_are_summed(web):
    base = web.base
    sent = 0
    deadline = time.monotonic() + 30
    while sent < 20 or len(_answered_by(web.access_log, "/api/v1/sessions")) < 2:
        assert time.monotonic() < deadline, "one worker answered every request"
        # a new connection each time, so either worker may answer
        assert requests.get(f"{base}/api/v1/sessions", timeout=10).status_code == 200
        sent += 1
        if sent >= 20:
            time.sleep(0.1)  # the access log is written after the answer
    samples = http_scrape(base)
    assert samples[SESSIONS_OK] == sent
    assert samples[("orchestrator_http_request_duration_seconds_count", *SESSIONS_OK[1:])] == sent

    # the gauges are the database's, whichever worker answers
    for name in ("a-1", "a-2"):
        assert (
            requests.post(
                f"{base}/api/v1/agents/register",
                json={"name": name, "type": "QA", "capabilities": ["TESTING"]},
                timeout=10,
            ).status_code
            == 201
        )
    session = requests.post(f"{base}/api/v1/sessions", json={"title": "m"}, timeout=10).json()
    requests.post(
        f"{base}/api/v1/tasks", json={"session_id": session["id"], "title": "t"}, timeout=10
    )
    samples = wait_for(lambda: (s := http_scrape(base))[("orchestrator_agents", "IDLE")] == 2 and s)
    assert samples[("orchestrator_tasks", "PENDING")] == 1
    # the web processes' relays published the events of these changes
    wait_for(lambda: http_scrape(base)["orchestrator_events_published_total",] >= 4)


@pytest.mark.process
def test_websockets_are_counted_and_a_dead_workers_stop_counting(web):
    base = web.base
    (metrics_directory,) = [p for p in web.temp.iterdir() if p.name.startswith(metrics_dir.PREFIX)]
    socket = Client.connect(base.replace("http", "ws") + "/ws/agents")
    try:
        wait_for(lambda: http_scrape(base)["orchestrator_websocket_connections",] == 1)
        for _ in range(5):
            requests.get(f"{base}/api/v1/sessions", timeout=10)
        counted = http_scrape(base)[SESSIONS_OK]
        assert counted == 5
        # both workers die without a word: the master marks them dead, new ones boot
        for pid in _worker_pids(web.pid):
            os.kill(pid, signal.SIGKILL)

        def after_restart():
            with contextlib.suppress(requests.RequestException):
                return http_scrape(base)

        samples = wait_for(
            lambda: (s := after_restart()) and s["orchestrator_websocket_connections",] == 0 and s,
            timeout=30,
        )
        assert samples[SESSIONS_OK] == counted  # the dead workers' counts still count
    finally:
        with contextlib.suppress(Exception):
            socket.close()
    stop(web)
    assert not metrics_directory.exists()  # made for this run, removed at its end
