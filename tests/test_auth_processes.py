"""Authentication and rate limits over real HTTP: the Procfile's `web` process (gunicorn,
two workers) in production, and processes refusing to start without their secrets."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shared import tokens
from tests.support import ROOT
from tests.support.processes import BIN, free_port, procfile, start, stop, wait_for_http
from tests.support.waiting import wait_for

pytestmark = pytest.mark.process

KEY = "k" * 48
PRODUCTION = {"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": KEY}


@pytest.fixture
def production_web(settings, tmp_path):
    """Two workers sharing RATE_LIMIT=60/minute; an access log of which worker answered.
    Started after the tables are emptied (its event relay reads them)."""
    port = free_port()
    access_log = tmp_path / "access.log"
    web = start(
        "web",
        settings,
        PORT=str(port),
        WEB_CONCURRENCY="2",
        RATE_LIMIT="60/minute",
        GUNICORN_CMD_ARGS=f"--access-logfile {access_log} --access-logformat '%(p)s %(s)s %(U)s'",
        **PRODUCTION,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", web)
        _wait_for_workers(base, access_log, web, count=2)
        yield base, access_log, web
    finally:
        stop(web)


def _log_lines(access_log, path):
    with open(access_log) as log:
        lines = [line.split() for line in log if line.strip()]
    return [(pid, int(status)) for pid, status, url in lines if url == path]


def _wait_for_workers(base, access_log, web, count, timeout=30):
    """Until `count` workers have answered (the first answers while others still boot)."""
    deadline = time.monotonic() + timeout
    while len({pid for pid, _ in _log_lines(access_log, "/health")}) < count:
        assert web.poll() is None and time.monotonic() < deadline, f"not {count} workers up"
        with requests.Session() as session:
            session.get(f"{base}/health", timeout=5)
        time.sleep(0.05)  # between probes while the workers boot


def bearer(role="admin", sub=None, agent_id=None):
    sub = sub or f"user-{uuid.uuid4().hex[:8]}"
    return {
        "Authorization": f"Bearer {tokens.mint(key=KEY, sub=sub, role=role, agent_id=agent_id)}"
    }


def test_production_over_http(production_web):
    base, _, _ = production_web
    assert requests.get(f"{base}/health", timeout=5).status_code == 200
    assert requests.get(f"{base}/ready", timeout=5).status_code == 200
    refused = requests.get(f"{base}/api/v1/sessions", timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert refused.headers["X-Request-ID"] == refused.json()["error"]["request_id"]
    forged = tokens.mint(key="f" * 48, sub="mallory", role="admin")
    response = requests.get(
        f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {forged}"}, timeout=5
    )
    assert response.status_code == 401
    assert forged not in response.text

    admin = bearer("admin")
    created = requests.post(
        f"{base}/api/v1/sessions", json={"title": "t"}, headers=admin, timeout=5
    )
    assert created.status_code == 201
    viewer = requests.post(
        f"{base}/api/v1/sessions", json={"title": "t"}, headers=bearer("viewer"), timeout=5
    )
    assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "FORBIDDEN"

    registrar = bearer("agent", sub="registrar")
    body = {"name": f"http-{uuid.uuid4().hex[:6]}", "type": "QA", "capabilities": ["TESTING"]}
    agent = requests.post(f"{base}/api/v1/agents/register", json=body, headers=registrar, timeout=5)
    assert agent.status_code == 201
    own = {"Authorization": f"Bearer {agent.json()['token']}"}
    agent_id = agent.json()["id"]
    beat = requests.post(
        f"{base}/api/v1/agents/{agent_id}/heartbeat",
        json={"current_load": 3},
        headers=own,
        timeout=5,
    )
    assert beat.status_code == 200
    body = {"name": f"http-{uuid.uuid4().hex[:6]}", "type": "QA", "capabilities": ["TESTING"]}
    second = requests.post(
        f"{base}/api/v1/agents/register", json=body, headers=registrar, timeout=5
    )
    other = {"Authorization": f"Bearer {second.json()['token']}"}
    hijack = requests.post(
        f"{base}/api/v1/agents/{agent_id}/heartbeat",
        json={"current_load": 99},
        headers=other,
        timeout=5,
    )
    assert hijack.status_code == 403
    # a token for an agent that does not exist is no identity at all
    ghost = bearer("agent", agent_id=uuid.uuid4())
    haunt = requests.post(
        f"{base}/api/v1/agents/{agent_id}/heartbeat",
        json={"current_load": 99},
        headers=ghost,
        timeout=5,
    )
    assert haunt.status_code == 401


def test_the_limit_is_shared_by_the_workers(production_web):
    """61 requests in a minute from one client: 60 answered, the 61st (and on) 429, by
    whichever worker; both workers answered some, so neither counted alone."""
    base, access_log, _ = production_web
    headers = bearer("viewer")  # a client of its own

    def get(_):
        # a new connection each time, so both workers take requests
        with requests.Session() as session:
            response = session.get(f"{base}/api/v1/sessions", headers=headers, timeout=10)
            return response.status_code, response.headers

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(get, range(70)))
    assert time.monotonic() - started < 50  # all in one window
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 60, 429: 10}, statuses
    for status, response_headers in answers:
        assert response_headers["X-RateLimit-Limit"] == "60"
        if status == 429:
            assert 1 <= int(response_headers["Retry-After"]) <= 60

    # the access log is written after the answer
    wait_for(lambda: len(_log_lines(access_log, "/api/v1/sessions")) >= 70)
    lines = _log_lines(access_log, "/api/v1/sessions")
    by_worker = Counter(pid for pid, status in lines if status == 200)
    assert len(by_worker) == 2, f"one worker answered everything: {by_worker}"
    assert sum(by_worker.values()) == 60


def run_to_exit(name, settings, **env) -> subprocess.CompletedProcess:
    """Run a Procfile process that is expected to stop by itself; output in `stderr`."""
    return subprocess.run(
        ["bash", "-c", "exec " + procfile()[name].strip()],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("short-key", "at least 32 characters"),
        ("", "at least 32 characters"),
        ("orchestrator-development-key-not-secret-0123456789", "public development key"),
    ],
)
def test_production_web_refuses_to_start_without_a_strong_key(settings, key, reason):
    result = run_to_exit(
        "web", settings, PORT=str(free_port()), ORCHESTRATOR_ENV="production", API_SECRET_KEY=key
    )
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("orchestrator:")]
    assert len(ours) == 1 and "API_SECRET_KEY" in ours[0] and reason in ours[0]
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr
    if key:
        assert key not in result.stderr


def test_production_flower_refuses_to_start_without_basic_auth(settings):
    result = run_to_exit(
        "flower", settings, FLOWER_PORT=str(free_port()), FLOWER_BASIC_AUTH="", **PRODUCTION
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "orchestrator: configuration error: FLOWER_BASIC_AUTH (user:password) must be set "
        "when ORCHESTRATOR_ENV=production"
    ]


def test_flower_is_behind_basic_auth(settings):
    port = free_port()
    flower = start(
        "flower", settings, FLOWER_PORT=str(port), FLOWER_BASIC_AUTH="ops:s3cret-pw", **PRODUCTION
    )
    try:
        health = wait_for_http(f"http://127.0.0.1:{port}/healthcheck", flower)
        assert health.status_code == 200  # for load balancers
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
        wrong = requests.get(f"http://127.0.0.1:{port}/", auth=("ops", "nope"), timeout=5)
        assert wrong.status_code == 401
        right = requests.get(f"http://127.0.0.1:{port}/", auth=("ops", "s3cret-pw"), timeout=5)
        assert right.status_code == 200
        # the password is in the environment, not on a command line anyone can list
        command_lines = subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True, check=True
        ).stdout
        assert "s3cret-pw" not in command_lines
    finally:
        stop(flower)


def test_flower_rejects_malformed_basic_auth(settings):
    result = run_to_exit(
        "flower", settings, FLOWER_PORT=str(free_port()), FLOWER_BASIC_AUTH="no-password"
    )
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr
    assert "no-password" not in result.stderr


def _handshake(base, path, token):
    """The HTTP answer to a WebSocket upgrade request (101 when accepted)."""
    return requests.get(
        base + path,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Authorization": f"Bearer {token}",
        },
        timeout=5,
        stream=True,
    )


def test_an_agent_named_like_a_person_is_not_that_person(production_web, redis):
    """Issue 12: the agent "alice" spent the operator alice's rate budget, WebSocket slots
    and idempotency keys. Its identity is `agent:<id>` now, in every process."""
    base, _, _ = production_web
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    person = bearer("operator", sub=alice)
    body = {"name": alice, "type": "QA", "capabilities": ["TESTING"]}
    registered = requests.post(
        f"{base}/api/v1/agents/register", json=body, headers=bearer("agent"), timeout=5
    )
    assert registered.status_code == 201
    agent_id = registered.json()["id"]
    token = registered.json()["token"]
    own = {"Authorization": f"Bearer {token}"}

    # alice's WebSocket slots are all taken (live leases): the agent's stream still opens
    now = time.time()
    redis.zadd(f"orchestrator:ws-leases:sub:{alice}", {f"held-{i}": now + 60 for i in range(5)})
    stream = _handshake(base, f"/ws/agents/{agent_id}", token)
    assert stream.status_code == 101
    stream.close()
    refused = _handshake(base, "/ws/agents", person["Authorization"].split()[1])
    assert refused.status_code == 429

    # alice's idempotency key is hers
    created = requests.post(
        f"{base}/api/v1/sessions",
        json={"title": "t"},
        headers={**person, "Idempotency-Key": "k-1"},
        timeout=5,
    )
    assert created.status_code == 201
    beat = requests.post(
        f"{base}/api/v1/agents/{agent_id}/heartbeat",
        json={"current_load": 4},
        headers={**own, "Idempotency-Key": "k-1"},
        timeout=5,
    )
    assert beat.status_code == 200, beat.text

    # alice spends her budget: the agent keeps its own
    def get(headers):
        with requests.Session() as session:
            return session.get(f"{base}/api/v1/sessions", headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(pool.map(lambda _: get(person), range(60)))
    assert statuses[429] >= 1, statuses
    mine = requests.get(f"{base}/api/v1/agents/{agent_id}", headers=own, timeout=5)
    assert mine.status_code == 200
    assert int(mine.headers["X-RateLimit-Remaining"]) == 60 - 2
    assert tokens.verify(token, key=KEY).sub == f"agent:{agent_id}"


def test_a_registration_token_mints_at_most_its_limit_across_workers(production_web):
    """AGENT_REGISTRATION_LIMIT (default 10/minute) per registration token, counted in
    Redis: an 11th registration in the window is refused, whichever worker takes it."""
    base, access_log, _ = production_web
    registrar = bearer("agent")

    def register(i):
        body = {"name": f"fleet-{uuid.uuid4().hex[:8]}", "type": "QA", "capabilities": ["TESTING"]}
        with requests.Session() as session:
            response = session.post(
                f"{base}/api/v1/agents/register", json=body, headers=registrar, timeout=10
            )
            return response.status_code, response

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(register, range(14)))
    statuses = Counter(status for status, _ in answers)
    assert statuses == {201: 10, 429: 4}, statuses
    for status, response in answers:
        if status == 429:
            assert "registration" in response.json()["error"]["message"]
            assert 1 <= int(response.headers["Retry-After"]) <= 60
    wait_for(lambda: len(_log_lines(access_log, "/api/v1/agents/register")) >= 14)
    lines = _log_lines(access_log, "/api/v1/agents/register")
    assert len({pid for pid, _ in lines}) == 2, lines
