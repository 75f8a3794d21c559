"""The latency an agent sees: from sending `POST /api/v1/tasks` until `task.assigned`
arrives on the holder's `/ws/agents/{id}`, on the client's clock (issue 19).

A real stack on a database of its own: the Procfile's `web` (gunicorn, its defaults:
the outbox relay and the hub run in it) and `worker` (prefork, concurrency 2), no beat,
development mode. A RUNNING session and 50 agents with room for 20 tasks each, each with
a WebSocket open on its own stream; 500 tasks are created at 50 a second over one
keep-alive connection. Each socket is read by a thread of its own that notes when each
`task.assigned` arrives; a task's latency is that time minus the time its POST was sent.

Floors, measured in the same run and interleaved with the tasks (5 rounds of 100 each),
each 500 times at 50 a second: a bare Celery round trip on the same broker and worker
(bench/floor_job.py: send, then the job's Redis write seen with BLPOP), and a bare Redis
stream hop (XADD of a timestamp to a blocked XREAD). Goal: p95 <= 30 ms.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import redis as redis_lib
import requests
from simple_websocket import ConnectionClosed

from bench.common import Result, benchmark_database, paced, percentiles
from bench.dispatch import floor_trips
from bench.stack import celery_worker, web_server
from orchestrator_api.job_sender import make_job_sender
from orchestrator_client.ws_client import Client

REDIS_DB = 7
TASKS = 500
RATE = 50  # tasks (and floor round trips) a second
ROUNDS = 5
WARMUP = 10  # of each, not counted
AGENTS = 50
CAPACITY = 20
GOAL_P95_MS = 30.0
ARRIVAL_TIMEOUT_SECONDS = 10
FLOOR_STREAM = "bench:agent_latency:floor"
WALL_SENT: dict[str, tuple[float, float]] = {}  # task id -> (perf_counter, time.time)


class AgentSocket:
    """An agent's `/ws/agents/{id}`, read by its own thread: when each task.assigned came."""

    def __init__(self, base_url: str, agent_id: str) -> None:
        self.client = Client.connect(base_url.replace("http", "ws") + f"/ws/agents/{agent_id}")
        self.assigned_at: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                raw = self.client.receive()
                arrived = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "task.assigned":
                    self.assigned_at[message["payload"]["task_id"]] = arrived
        except (ConnectionClosed, OSError, ValueError):
            return

    def close(self) -> None:
        self.client.close()


def run() -> list[Result]:
    with (
        benchmark_database("agent_latency", REDIS_DB) as settings,
        # one client (no tokens in development mode) holds all the agents' sockets
        web_server(settings, WS_MAX_CONNECTIONS_PER_CLIENT=str(AGENTS)) as server,
        celery_worker(settings, include="bench.floor_job") as _worker,  # dispatch's floor
        requests.Session() as http,
    ):
        print(f"  web {server.label}, worker prefork 2, no beat; {AGENTS} agents x {CAPACITY}")
        session_id, agent_ids = prepare(http, server.url)
        sockets = [AgentSocket(server.url, agent_id) for agent_id in agent_ids]
        send = make_job_sender(settings)
        redis = redis_lib.Redis.from_url(settings.redis_url)
        try:
            floor_trips(send, redis, WARMUP)
            stream_hops(settings.redis_url, WARMUP)
            create_tasks(http, server.url, session_id, WARMUP)
            celery_ms: list[float] = []
            redis_ms: list[float] = []
            sent_at: dict[str, float] = {}
            for _ in range(ROUNDS):
                celery_ms += floor_trips(send, redis, TASKS // ROUNDS)
                redis_ms += stream_hops(settings.redis_url, TASKS // ROUNDS)
                sent_at.update(create_tasks(http, server.url, session_id, TASKS // ROUNDS))
            arrived = wait_for_arrivals(sockets, sent_at)
            print_stages(settings.sqlalchemy_url, arrived)
        finally:
            for agent_socket in sockets:
                agent_socket.close()
            send.client.close()
            redis.close()

    latencies = [(arrived[task] - sent) * 1000 for task, sent in sent_at.items() if task in arrived]
    missing = len(sent_at) - len(latencies)
    p50, p95, p99 = percentiles(latencies, 50, 95, 99)
    c50, c95, c99 = percentiles(celery_ms, 50, 95, 99)
    r50, r95, r99 = percentiles(redis_ms, 50, 95, 99)
    print(
        f"  POST sent -> task.assigned received on the agent's socket, {len(latencies)} tasks: "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms; "
        f"never arrived within {ARRIVAL_TIMEOUT_SECONDS} s: {missing}"
    )
    print(f"  floor: Celery round trip p50 {c50:.1f} ms, p95 {c95:.1f} ms, p99 {c99:.1f} ms")
    print(f"  floor: Redis stream hop p50 {r50:.2f} ms, p95 {r95:.2f} ms, p99 {r99:.2f} ms")
    return [
        Result(
            benchmark=f"agent latency (web {server.label}, worker 2, {AGENTS} agent sockets)",
            measured=f"POST -> task.assigned on /ws/agents/{{id}} p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, p99 {p99:.1f} ms ({TASKS} tasks at {RATE}/s)",
            floor=f"Celery round trip p50 {c50:.1f} / p95 {c95:.1f} ms; Redis XADD->XREAD "
            f"p50 {r50:.2f} / p95 {r95:.2f} ms",
            goal=f"p95 <= {GOAL_P95_MS:.0f} ms: {p95:.1f}; all arrived: {missing == 0}",
            met=p95 <= GOAL_P95_MS and missing == 0,
        )
    ]


def prepare(http: requests.Session, base_url: str) -> tuple[str, list[str]]:
    """A RUNNING session and the agents (all with the tasks' default capability)."""
    api = f"{base_url}/api/v1"
    session = http.post(f"{api}/sessions", json={"title": "agent latency bench"}, timeout=10)
    session.raise_for_status()
    session_id = session.json()["id"]
    http.post(f"{api}/sessions/{session_id}/start", timeout=10).raise_for_status()
    agent_ids = []
    for n in range(AGENTS):
        body = {
            "name": f"latency-agent-{n}-{uuid.uuid4().hex[:6]}",
            "type": "BACKEND",
            "capabilities": ["CODE_GENERATION"],
            "max_concurrent_tasks": CAPACITY,
        }
        response = http.post(f"{api}/agents/register", json=body, timeout=10)
        response.raise_for_status()
        agent_ids.append(response.json()["id"])
    return session_id, agent_ids


def create_tasks(
    http: requests.Session, base_url: str, session_id: str, count: int
) -> dict[str, float]:
    """The new tasks' ids, each with when its POST was sent (perf_counter)."""
    sent_at = {}
    for n in paced(count, RATE):
        began, wall = time.perf_counter(), time.time()
        response = http.post(
            f"{base_url}/api/v1/tasks",
            json={"session_id": session_id, "title": f"latency task {n}"},
            timeout=10,
        )
        response.raise_for_status()
        sent_at[response.json()["id"]] = began
        WALL_SENT[response.json()["id"]] = (began, wall)
    return sent_at


def stream_hops(url: str, count: int) -> list[float]:
    """XADD to a stream until an XREAD BLOCK on another connection returns it: ms each."""
    writer, reader = redis_lib.Redis.from_url(url), redis_lib.Redis.from_url(url)
    hops: list[float] = []
    last = writer.xadd(FLOOR_STREAM, {"t": "start"}, maxlen=1000)
    try:
        for _ in paced(count, RATE):
            got: list = []
            waiter = threading.Thread(
                target=lambda after=last, into=got: into.append(
                    reader.xread({FLOOR_STREAM: after}, block=5000)
                )
            )
            waiter.start()
            time.sleep(0.002)  # the reader is blocked before the XADD
            began = time.perf_counter()
            last = writer.xadd(FLOOR_STREAM, {"t": "x"}, maxlen=1000)
            waiter.join()
            hops.append((time.perf_counter() - began) * 1000)
            if not got or not got[0]:
                raise RuntimeError("the floor's XREAD saw nothing")
    finally:
        writer.close()
        reader.close()
    return hops


def print_stages(url: str, arrived: dict[str, float]) -> None:
    """Where the time went, by the database's timestamps (this machine's clock): the
    request until its INSERT, the job until its assignment, the relay until it numbered
    the event, and the stream, hub and socket until the client had it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT t.id::text AS id, extract(epoch FROM t.created_at) AS created,"
                    " extract(epoch FROM t.assigned_at) AS assigned,"
                    " extract(epoch FROM e.published_at) AS published"
                    " FROM tasks t JOIN outbox_events e ON e.type = 'task.assigned'"
                    " AND e.payload->>'task_id' = t.id::text"
                )
            ).all()
    finally:
        engine.dispose()
    stages: dict[str, list[float]] = {"request": [], "job": [], "relay": [], "delivery": []}
    for row in rows:
        if row.id not in WALL_SENT or row.id not in arrived or row.published is None:
            continue
        began, wall = WALL_SENT[row.id]
        received = wall + (arrived[row.id] - began)
        stages["request"].append((float(row.created) - wall) * 1000)
        stages["job"].append((float(row.assigned) - float(row.created)) * 1000)
        stages["relay"].append((float(row.published) - float(row.assigned)) * 1000)
        stages["delivery"].append((received - float(row.published)) * 1000)
    for name, values in stages.items():
        if values:
            p50, p95 = percentiles(values, 50, 95)
            print(f"  stage {name:<9} p50 {p50:6.1f} ms, p95 {p95:6.1f} ms")


def wait_for_arrivals(sockets: list[AgentSocket], sent_at: dict[str, float]) -> dict[str, float]:
    """Each task's arrival on some agent's socket (once all came, or after the timeout)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_SECONDS
    while True:
        arrived: dict[str, float] = {}
        for agent_socket in sockets:
            arrived.update(agent_socket.assigned_at)
        if all(task in arrived for task in sent_at) or time.monotonic() > deadline:
            return arrived
        time.sleep(0.1)
