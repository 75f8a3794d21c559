"""The Python client against a real gunicorn server and a real Celery worker: every route,
its errors as exceptions, the retries, the event stream, and the reference agent.

The retry policy's details (which answers are retried, the Idempotency-Key kept across
retries, Retry-After, timeouts) are checked against a scripted HTTP server, since the real
one can't be made to time out or answer 429 on cue; restarts, a real 503 and resumed
streams against the real server.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import uuid

import pytest
import requests

from orchestrator_client import (
    AgentNameTaken,
    AgentNotFound,
    AgentUnavailable,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidTransition,
    NotFound,
    OrchestratorClient,
    OrchestratorError,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    SessionNotFound,
    TaskNotFound,
    Unauthorized,
    ValidationError,
)
from orchestrator_client.agent import ReferenceAgent
from shared import tokens
from tests.support.client import PRODUCTION_KEY, error_body, scripted, tidy
from tests.support.live_server import live_server_fixture
from tests.support.processes import PrivateRedis, free_port, running_web, start, stop, wait_for_http
from tests.support.waiting import wait_for

# unfinished session and no agent behind (`api` fixture).
pytestmark = pytest.mark.shared_data

live = live_server_fixture(WEB_THREADS="32")


@pytest.fixture
def api(live):
    client = OrchestratorClient(live, retries=2, backoff=0.1)
    yield client
    tidy(client)
    client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def running_session(api, title="client tests") -> dict:
    return api.start_session(api.create_session(title)["id"])


@pytest.mark.process
def test_health_and_ready(api):
    assert api.health()["status"] == "ok"
    assert api.ready()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.process
def test_session_routes(api):
    created = api.create_session(
        "client session", type="review", priority="high", initial_prompt="do it"
    )
    assert (created["status"], created["type"], created["priority"]) == (
        "PENDING",
        "REVIEW",
        "HIGH",
    )
    sid = created["id"]
    assert api.get_session(sid)["initial_prompt"] == "do it"
    for action, status in (
        ("start", "RUNNING"),
        ("pause", "PAUSED"),
        ("resume", "RUNNING"),
        ("complete", "COMPLETED"),
    ):
        assert getattr(api, f"{action}_session")(sid)["status"] == status
    other = api.cancel_session(api.create_session("to cancel")["id"])
    assert other["status"] == "CANCELLED"

    page = api.list_sessions(status="completed", page_size=100)
    assert set(page) == {"items", "total", "page", "page_size", "has_more"}
    assert sid in [s["id"] for s in page["items"]]
    assert {s["status"] for s in page["items"]} == {"COMPLETED"}

    with pytest.raises(InvalidTransition) as error:
        api.pause_session(other["id"])
    assert error.value.status == 400 and error.value.code == "INVALID_TRANSITION"
    assert "CANCELLED" in error.value.message and error.value.request_id
    with pytest.raises(SessionNotFound) as error:
        api.get_session(uuid.uuid4())
    assert error.value.status == 404 and isinstance(error.value, NotFound)
    with pytest.raises(ValidationError) as error:
        api.create_session("")
    assert "title" in error.value.details
    with pytest.raises(ValidationError):
        api.list_sessions(page_size=101)
    with pytest.raises(ValidationError):
        api.start_session("not-a-uuid")
    with pytest.raises(PayloadTooLarge) as error:
        api.create_session("big", initial_prompt="x" * (1024 * 1024 + 1))
    assert error.value.status == 413


@pytest.mark.process
def test_agent_routes(api):
    name = unique("client-agent")
    agent = api.register_agent(
        name, "backend", ["code_generation", "testing"], max_concurrent_tasks=2
    )
    assert agent["token"] and agent["status"] == "IDLE" and agent["max_concurrent_tasks"] == 2
    assert agent["capabilities"] == ["CODE_GENERATION", "TESTING"]
    with pytest.raises(AgentNameTaken) as error:
        api.register_agent(name, "BACKEND", ["TESTING"])
    assert error.value.status == 409 and isinstance(error.value, Conflict)

    aid = agent["id"]
    assert api.get_agent(aid)["name"] == name

    def listed(**filters):
        return [a["id"] for a in api.list_agents(page_size=100, **filters)["items"]]

    assert aid in listed(capability="TESTING", available_only=True, status="IDLE", type="BACKEND")
    assert aid not in listed(capability="DEPLOYMENT")
    assert api.heartbeat(aid, 40)["current_load"] == 40
    assert api.agent_tasks(aid) == []
    with pytest.raises(ValidationError) as error:
        api.heartbeat(aid, 101)
    assert "current_load" in error.value.details

    assert api.deregister_agent(aid) is None
    record = api.get_agent(aid)  # kept as a record of who did its tasks
    assert record["status"] == "OFFLINE" and record["deregistered_at"]
    with pytest.raises(AgentNotFound):
        api.heartbeat(aid, 10)
    with pytest.raises(AgentNotFound):
        api.deregister_agent(aid)


@pytest.mark.process
def test_task_routes(api, live):
    sid = running_session(api)["id"]
    with pytest.raises(SessionNotFound):
        api.create_task(uuid.uuid4(), "orphan")
    with pytest.raises(ValidationError) as error:
        api.create_task(sid, "bad", required_capabilities=["FLYING"])
    assert "required_capabilities" in error.value.details

    task = api.create_task(
        sid,
        "tune it",
        description="make it fast",
        complexity="high",
        required_capabilities=["PERFORMANCE_OPTIMIZATION"],
        timeout_seconds=600,
    )
    assert (task["status"], task["complexity"], task["timeout_seconds"]) == ("PENDING", "HIGH", 600)
    tid = task["id"]
    # no agent fits: 503 AGENT_UNAVAILABLE is an answer, not an outage, so not retried
    patient = OrchestratorClient(live, retries=3, backoff=2)
    began = time.monotonic()
    with pytest.raises(AgentUnavailable) as error:
        patient.assign_task(tid)
    assert error.value.status == 503 and time.monotonic() - began < 1.5

    aid = api.register_agent(unique("tuner"), "BACKEND", ["PERFORMANCE_OPTIMIZATION"])["id"]
    # the worker may assign it first (the registration asks for an assignment round)
    with contextlib.suppress(InvalidTransition):
        assert api.assign_task(tid, agent_id=aid)["status"] == "ASSIGNED"
    wait_for(lambda: api.get_task(tid)["assigned_agent_id"] == aid)
    assert [t["id"] for t in api.agent_tasks(aid)] == [tid]
    assert api.start_task(tid, agent_id=aid)["status"] == "IN_PROGRESS"
    assert api.report_progress(tid, 50, "half way", agent_id=aid)["progress"] == 50
    done = api.complete_task(tid, {"speedup": 3}, agent_id=aid)
    assert (done["status"], done["result"]) == ("COMPLETED", {"speedup": 3})
    with pytest.raises(InvalidTransition):
        api.start_task(tid, agent_id=aid)

    second = api.create_task(sid, "flaky", required_capabilities=["PERFORMANCE_OPTIMIZATION"])
    wait_for(lambda: api.get_task(second["id"])["status"] == "ASSIGNED")
    failed = api.fail_task(second["id"], "boom", retryable=True, agent_id=aid)
    assert (failed["status"], failed["error"]) == ("PENDING", "boom")
    assert api.cancel_task(second["id"])["status"] == "CANCELLED"
    with pytest.raises(TaskNotFound):
        api.get_task(uuid.uuid4())

    root = api.create_task(sid, "ship a fix", required_capabilities=["DEPLOYMENT"])
    assert api.decompose_task(root["id"], "bugfix")["id"] == root["id"]
    subtasks = wait_for(lambda: api.get_task(root["id"])["subtasks"])
    assert len(subtasks) == 4
    with pytest.raises(Conflict):
        api.decompose_task(root["id"], "BUGFIX")
    with pytest.raises(ValidationError):
        api.decompose_task(
            api.create_task(sid, "x", required_capabilities=["DEPLOYMENT"])["id"], "NOPE"
        )

    listed = api.list_tasks(session_id=sid, page_size=100)
    assert listed["total"] == 3 + 4 + 1
    roots = api.list_tasks(session_id=sid, parent_only=True, page_size=100)["items"]
    assert all(t["parent_id"] is None for t in roots) and len(roots) == 4
    completed = api.list_tasks(session_id=sid, status="COMPLETED")["items"]
    assert [t["id"] for t in completed] == [tid]


@pytest.mark.process
def test_tokens_are_sent_and_their_refusals_mapped(live, settings):
    with pytest.raises(Unauthorized) as error:
        OrchestratorClient(live, token="not-a-jwt").list_sessions()
    assert error.value.status == 401
    viewer = OrchestratorClient(
        live, token=tokens.mint(key=settings.secret_key, sub="reader", role="viewer")
    )
    assert viewer.list_sessions()["page"] == 1
    with pytest.raises(Forbidden):
        viewer.create_session("not allowed")


def test_a_post_keeps_its_idempotency_key_across_retries():
    with scripted(
        {"status": 503, "body": error_body("SERVICE_UNAVAILABLE")},
        {"status": 502, "body": "<html>bad gateway</html>"},
        {"status": 201, "body": {"id": "s1"}},
        {"status": 200, "body": {"items": []}},
    ) as server:
        client = OrchestratorClient(server.url, retries=3, backoff=0.01)
        assert client.create_session("t") == {"id": "s1"}
        keys = [headers.get("Idempotency-Key") for _m, _p, headers in server.requests]
        assert len(keys) == 3 and len(set(keys)) == 1 and uuid.UUID(keys[0])
        client.create_session("another call")
        assert server.requests[-1][2]["Idempotency-Key"] != keys[0]
        client.agent_tasks("a1")
        assert server.requests[-1][0] == "GET" and "Idempotency-Key" not in server.requests[-1][2]


def test_a_timed_out_post_is_sent_again_with_the_same_key():
    with scripted(
        {"status": 201, "body": {"id": "late"}, "delay": 2},
        {"status": 201, "body": {"id": "s1"}},
    ) as server:
        client = OrchestratorClient(server.url, timeout=0.3, retries=2, backoff=0.01)
        began = time.monotonic()
        assert client.create_session("t") == {"id": "s1"}
        assert time.monotonic() - began < 1.5
        first, second = (headers for _m, _p, headers in server.requests)
        assert first["Idempotency-Key"] == second["Idempotency-Key"]


def test_retry_after_is_honoured_on_429_and_503():
    limited = {"status": 429, "body": error_body("RATE_LIMITED"), "headers": {"Retry-After": "1"}}
    busy = {
        "status": 503,
        "body": error_body("SERVICE_UNAVAILABLE"),
        "headers": {"Retry-After": "1"},
    }
    for refusal in (limited, busy):
        with scripted(refusal, {"status": 200, "body": {"status": "ok"}}) as server:
            client = OrchestratorClient(server.url, retries=2, backoff=0.01)
            began = time.monotonic()
            assert client.health() == {"status": "ok"}
            assert time.monotonic() - began >= 0.95 and len(server.requests) == 2
    too_long = {**limited, "headers": {"Retry-After": "120"}}
    with scripted(too_long) as server:
        with pytest.raises(RateLimited) as error:
            OrchestratorClient(server.url, retries=3, max_retry_after=30).list_sessions()
        assert error.value.retry_after == 120 and len(server.requests) == 1


def test_retries_are_bounded_and_final_answers_are_not_retried():
    with scripted({"status": 503, "body": error_body("SERVICE_UNAVAILABLE", "db down")}) as server:
        with pytest.raises(ServiceUnavailable) as error:
            OrchestratorClient(server.url, retries=2, backoff=0.01).list_tasks()
        assert len(server.requests) == 3
        assert (error.value.message, error.value.request_id) == ("db down", "rid-1")
    for code, status, exception in (
        ("AGENT_UNAVAILABLE", 503, AgentUnavailable),
        ("TASK_NOT_FOUND", 404, TaskNotFound),
        ("INVALID_TRANSITION", 400, InvalidTransition),
        ("SOMETHING_NEW", 418, OrchestratorError),
    ):
        with scripted({"status": status, "body": error_body(code)}) as server:
            with pytest.raises(exception) as error:
                OrchestratorClient(server.url, retries=3, backoff=0.01).assign_task("t1")
            assert (error.value.code, error.value.status) == (code, status)
            assert len(server.requests) == 1


class LosingProxy(http.server.ThreadingHTTPServer):
    """Forwards to the real server, but loses the first answer (the connection drops
    after the server acted), as a network failure would."""

    daemon_threads = True

    def __init__(self, target: str):
        self.target = target
        self.forwarded: list[dict] = []
        super().__init__(("127.0.0.1", 0), LosingProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass


class LosingProxyHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = requests.post(self.server.target + self.path, data=body, headers=headers)
        self.server.forwarded.append({"key": headers.get("Idempotency-Key"), **answer.json()})
        if len(self.server.forwarded) == 1:
            self.close_connection = True  # acted on, answer lost
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *_args):
        pass


@pytest.mark.process
def test_a_lost_answer_is_retried_and_the_server_acts_once(api, live):
    proxy = LosingProxy(live)
    try:
        client = OrchestratorClient(f"http://127.0.0.1:{proxy.server_address[1]}", backoff=0.01)
        title = unique("created once")
        created = client.create_session(title)
    finally:
        proxy.shutdown()
        proxy.server_close()
    first, second = proxy.forwarded
    assert first["key"] == second["key"] and first["id"] == second["id"] == created["id"]
    matching = [s for s in api.list_sessions(page_size=100)["items"] if s["title"] == title]
    assert len(matching) == 1


def test_no_answer_at_all_is_connection_failed():
    client = OrchestratorClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(ConnectionFailed) as error:
        client.health()
    assert "2 attempts" in error.value.message


@pytest.mark.process
def test_a_server_that_comes_up_later_is_waited_for_and_streams_resume(api, settings):
    """The client retries while nothing listens; the event stream reconnects after the
    server restarts, gets what it missed once, then the live events."""
    port = free_port()
    servers = []
    timer = threading.Timer(0.5, lambda: servers.append(start("web", settings, PORT=str(port))))
    timer.start()
    late = OrchestratorClient(f"http://127.0.0.1:{port}", retries=20, backoff=0.2, max_backoff=1)
    stream = late.events("/ws/sessions", backoff=0.1, max_backoff=0.5)
    received: list[dict] = []
    try:
        assert late.create_session("after the server came up")["status"] == "PENDING"
        threading.Thread(target=collect, args=(stream, received), daemon=True).start()
        wait_for(stream.connected.is_set)

        def seen(session) -> bool:
            return any(m["payload"].get("session_id") == session["id"] for m in received)

        first = api.create_session("first")
        wait_for(lambda: seen(first))
        stop(servers.pop())
        wait_for(lambda: not stream.connected.is_set())
        missed = api.create_session("missed")  # through the other server
        servers.append(start("web", settings, PORT=str(port)))
        wait_for_http(f"http://127.0.0.1:{port}/ready", servers[-1])
        wait_for(lambda: seen(missed) and stream.connections >= 2)  # reconnected, resumed
        again = api.create_session("live again")
        wait_for(lambda: seen(again))
    finally:
        timer.cancel()
        stream.close()
        for server in servers:
            stop(server)
    ids = [int(m["id"]) for m in received]
    assert ids == sorted(set(ids)), "in order, once"
    order = [m["payload"]["session_id"] for m in received if m["type"] == "session.created"]
    assert order[-3:] == [first["id"], missed["id"], again["id"]]


def collect(stream, into: list) -> None:
    for message in stream:
        into.append(message)


@pytest.mark.process
def test_a_503_from_the_real_server_is_retried(settings):
    redis_server = PrivateRedis()
    redis_server.start()
    try:
        with running_web(
            settings.with_overrides(redis_url=redis_server.url), WEB_THREADS="32"
        ) as base:
            redis_server.kill()
            with pytest.raises(ServiceUnavailable) as error:
                OrchestratorClient(base, retries=1, backoff=0.01).ready()
            assert error.value.body["checks"]["redis"] == "unavailable"
            threading.Timer(1.0, redis_server.start).start()
            patient = OrchestratorClient(base, retries=10, backoff=0.2, max_backoff=1)
            assert patient.ready()["checks"]["redis"] == "ok"
    finally:
        if redis_server.process.poll() is None:
            redis_server.kill()


@pytest.mark.process
def test_an_unknown_stream_is_not_found(api):
    with pytest.raises(NotFound):
        next(iter(api.events(f"/ws/agents/{uuid.uuid4()}")))


@pytest.mark.process
def test_the_agent_hears_of_its_tasks_on_its_stream(api):
    sid = running_session(api)["id"]
    agent = ReferenceAgent(
        api,
        unique("ws-agent"),
        ["CODE_GENERATION", "TESTING"],
        work_seconds=0.2,
        heartbeat_seconds=0.5,
        poll_seconds=300,  # only the poll at connection time
    ).start()
    try:
        wait_for(lambda: agent.streaming and agent.polls >= 1)
        time.sleep(0.3)  # the poll at connection time is done
        tasks = [api.create_task(sid, f"t{n}", required_capabilities=["TESTING"]) for n in range(2)]
        for task in tasks:
            done = wait_for(lambda t=task: _finished(api, t["id"]))
            assert done["status"] == "COMPLETED" and done["result"]["agent"] == agent.name
        assert agent.received == {"websocket": 2}
        assert sorted(agent.completed) == sorted(t["id"] for t in tasks)
        registered_at = api.get_agent(agent.id)["created_at"]
        wait_for(lambda: api.get_agent(agent.id)["last_heartbeat_at"] > registered_at)
    finally:
        agent.stop()
    assert api.get_agent(agent.id)["deregistered_at"]  # it deregistered on the way out


def _finished(api, task_id):
    task = api.get_task(task_id)
    return task if task["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None


@pytest.mark.process
def test_the_agent_polls_when_its_stream_is_unavailable(api, live):
    no_streams = OrchestratorClient(live, ws_url=f"ws://127.0.0.1:{free_port()}")
    agent = ReferenceAgent(
        no_streams,
        unique("poll-agent"),
        ["DOCUMENTATION"],
        work_seconds=0.1,
        offline_poll_seconds=0.3,
    ).start()
    try:
        sid = running_session(api)["id"]
        task = api.create_task(sid, "write docs", required_capabilities=["DOCUMENTATION"])
        assert wait_for(lambda: _finished(api, task["id"]))["status"] == "COMPLETED"
        assert agent.received["poll"] == 1 and agent.received["websocket"] == 0
        assert not agent.streaming
    finally:
        agent.stop()


@pytest.mark.process
def test_the_agent_fails_at_its_fail_rate_and_the_task_is_retried(api, settings):
    sid = running_session(api)["id"]
    agent = ReferenceAgent(
        api, unique("failing"), ["DEBUGGING"], work_seconds=0.05, fail_rate=1.0
    ).start()
    try:
        task = api.create_task(sid, "heisenbug", required_capabilities=["DEBUGGING"])
        failed = wait_for(lambda: _finished(api, task["id"]), timeout=30)
        assert failed["status"] == "FAILED" and failed["error"] == "simulated failure"
        assert agent.failed == [task["id"]] * settings.task_max_attempts
        assert api.get_session(sid)["status"] == "FAILED"
    finally:
        agent.stop()


@pytest.mark.process
def test_in_production_the_agent_acts_with_its_own_token(settings, api):
    production = {"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": PRODUCTION_KEY}
    with running_web(settings, WEB_THREADS="32", **production) as base:
        with pytest.raises(Unauthorized):
            OrchestratorClient(base).list_sessions()
        operator = OrchestratorClient(
            base, token=tokens.mint(key=PRODUCTION_KEY, sub="operator", role="operator")
        )
        fleet = OrchestratorClient(
            base, token=tokens.mint(key=PRODUCTION_KEY, sub="fleet", role="agent")
        )
        agent = ReferenceAgent(fleet, unique("prod-agent"), ["REFACTORING"], work_seconds=0.1)
        agent.start()
        try:
            assert agent.api.token not in (None, fleet.token)
            with pytest.raises(Forbidden):  # the fleet token may only register
                fleet.list_agents()
            sid = operator.start_session(operator.create_session("secured")["id"])["id"]
            task = operator.create_task(sid, "tidy", required_capabilities=["REFACTORING"])
            done = wait_for(lambda: _finished(operator, task["id"]))
            assert done["status"] == "COMPLETED"
        finally:
            agent.stop()
        assert operator.get_agent(agent.id)["deregistered_at"]
