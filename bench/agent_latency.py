"""The latency an agent sees: from sending `POST /api/v1/tasks` until `task.assigned`
arrives on the holder's `/ws/agents/{id}`, on the client's clock (issue 19).

A real stack on a database of its own, as `make run` starts it: the Procfile's `web`
(gunicorn, its defaults: the outbox relay runs in it), `gateway` (the streams, as a load
balancer routes /ws/ to it: docs/OPERATIONS.md) and `worker` (prefork, concurrency 2), no
beat, development mode. A RUNNING session and 50 agents with room for 20 tasks each, each
with a WebSocket open on its own stream (on the gateway; BENCH_AGENT_STREAMS=web: on
`web`, as a stack without a gateway serves them); 500 tasks are created at 50 a second
over one keep-alive connection. The sockets are read in a process of their own (one
asyncio loop), which notes when each `task.assigned` arrives; a task's latency is that
time minus the time its POST was sent.

Floors, measured in the same run and interleaved with the tasks (5 rounds of 100 each),
each 500 times at 50 a second: a bare Celery round trip on the same broker and worker
(bench/floor_job.py: send, then the job's Redis write seen with BLPOP), and a bare Redis
stream hop (XADD of a timestamp to a blocked XREAD). Goal: p95 <= 30 ms.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading
import time
import uuid
from urllib.parse import urlsplit

import redis as redis_lib
import requests

from bench import ws_client
from bench.common import Result, benchmark_database, paced, percentiles
from bench.dispatch import floor_trips
from bench.gateway import gateway_server
from bench.stack import celery_worker, web_server
from orchestrator_api.job_sender import make_job_sender

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
STREAMS = os.environ.get("BENCH_AGENT_STREAMS", "gateway")  # or "web"
WALL_SENT: dict[str, tuple[float, float]] = {}  # task id -> (perf_counter, time.time)


class AgentClient(ws_client.Client):
    """One agent's `/ws/agents/{id}` in the readers' process: when each task.assigned came,
    on `time.perf_counter` (CLOCK_MONOTONIC: one clock for the machine's processes)."""

    assigned_at: dict[str, float] = {}  # task id -> arrival, for the process's clients

    def _message(self, payload: bytes, now: float) -> None:
        arrived = time.perf_counter()
        if b'"task.assigned"' in payload:
            message = json.loads(payload)
            if message.get("type") == "task.assigned":
                self.assigned_at.setdefault(message["payload"]["task_id"], arrived)


def read_agent_sockets(host: str, port: int, agent_ids: list[str], pipe) -> None:
    """The body of the readers' process: every agent's socket, one asyncio loop (as each
    agent would read its own, not threads sharing a GIL with the benchmark's sender). Sends
    "connected", takes the ids of the tasks sent, and sends back when each arrived."""
    asyncio.run(_read_agent_sockets(host, port, agent_ids, pipe))


async def _read_agent_sockets(host: str, port: int, agent_ids: list[str], pipe) -> None:
    loop = asyncio.get_running_loop()
    clients = [AgentClient(f"{host}:{port}", f"/ws/agents/{agent}") for agent in agent_ids]
    for client in clients:
        await loop.create_connection(lambda client=client: client, host, port)
        await asyncio.wait_for(client.opened, ws_client.HANDSHAKE_SECONDS)
    pipe.send("connected")
    expected = await loop.run_in_executor(None, pipe.recv)
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not expected <= AgentClient.assigned_at.keys():
        await asyncio.sleep(0.05)
    for client in clients:
        client.close()
    pipe.send(dict(AgentClient.assigned_at))


def run() -> list[Result]:
    with (
        benchmark_database("agent_latency", REDIS_DB) as settings,
        # one client (no tokens in development mode) holds all the agents' sockets
        web_server(settings, WS_MAX_CONNECTIONS_PER_CLIENT=str(AGENTS)) as server,
        gateway_server(settings, WS_MAX_CONNECTIONS_PER_CLIENT=str(AGENTS)) as gateway,
        celery_worker(settings, include="bench.floor_job") as _worker,  # dispatch's floor
        requests.Session() as http,
    ):
        streams_url = gateway.url if STREAMS == "gateway" else server.url
        print(
            f"  web {server.label}, streams on {STREAMS}, worker prefork 2, no beat; "
            f"{AGENTS} agents x {CAPACITY}"
        )
        session_id, agent_ids = prepare(http, server.url)
        spawn = multiprocessing.get_context("spawn")
        readers, child = spawn.Pipe()
        reading = spawn.Process(
            target=read_agent_sockets,
            args=("127.0.0.1", urlsplit(streams_url).port, agent_ids, child),
            daemon=True,
        )
        reading.start()
        assert readers.recv() == "connected"
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
            readers.send(set(sent_at))
            arrived = readers.recv()
            print_stages(settings.sqlalchemy_url, arrived)
        finally:
            reading.join(timeout=5)
            reading.kill()
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
            benchmark=f"agent latency (web {server.label}, worker 2, {AGENTS} agent sockets "
            f"on {STREAMS})",
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
