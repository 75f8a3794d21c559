"""Dispatch latency: from a task's creation over HTTP until a Celery job has assigned it.

A real stack on a database of its own: the Procfile's `web` (gunicorn, its defaults) and
`worker` (prefork, concurrency 2), and no beat, so only the job each creation sends (after
its commit) assigns. A RUNNING session and 50 agents with room for 20 tasks each; 500
tasks are created with `POST /api/v1/tasks` at 50 a second (paced by a schedule, over one
keep-alive connection). A task's latency is `assigned_at - created_at` of its row, both
stamped with this machine's clock by the application: `created_at` by the web process when
it flushes the INSERT (just before the request's commit), `assigned_at` by the job just
before its UPDATE (just before the job's commit). No polling, so nothing extra loads the
machine while it is measured.

The floor, interleaved with the tasks (5 rounds of 100 each): a bare Celery round trip on
the same broker and worker. A trivial job (bench/floor_job.py) is sent by name with the
API's own job sender and timed from the send until its Redis write is seen (BLPOP), 500
times at 50 a second. Goal: p95 <= 25 ms and <= 4x the floor's p95.
"""

from __future__ import annotations

import time
import uuid

import redis as redis_lib
import requests
from sqlalchemy import create_engine, text

from bench import floor_job
from bench.common import Result, benchmark_database, paced, percentiles
from bench.stack import celery_worker, web_server
from orchestrator_api.job_sender import make_job_sender

REDIS_DB = 12
TASKS = 500
RATE = 50  # tasks (and floor round trips) a second
ROUNDS = 5
WARMUP = 10  # of each, not counted
AGENTS = 50
CAPACITY = 20
GOAL_P95_MS = 25.0
GOAL_FLOOR_RATIO = 4.0
ASSIGN_TIMEOUT_SECONDS = 10


def run() -> list[Result]:
    with (
        benchmark_database("dispatch", REDIS_DB) as settings,
        web_server(settings) as server,
        celery_worker(settings, include="bench.floor_job") as _worker,
        requests.Session() as http,
    ):
        print(f"  web {server.label}, worker prefork 2, no beat; {AGENTS} agents x {CAPACITY}")
        session_id = prepare(http, server.url)
        send = make_job_sender(settings)
        redis = redis_lib.Redis.from_url(settings.redis_url)
        floor_trips(send, redis, WARMUP)
        create_tasks(http, server.url, session_id, WARMUP)
        floor_ms: list[float] = []
        post_ms: list[float] = []
        task_ids: list[str] = []
        for _ in range(ROUNDS):
            floor_ms += floor_trips(send, redis, TASKS // ROUNDS)
            ids, posts = create_tasks(http, server.url, session_id, TASKS // ROUNDS)
            task_ids += ids
            post_ms += posts
        dispatch_ms, never_assigned = dispatch_latencies(settings.sqlalchemy_url, task_ids)
        send.client.close()
        redis.close()

    p50, p95, p99 = percentiles(dispatch_ms, 50, 95, 99)
    f50, f95, f99 = percentiles(floor_ms, 50, 95, 99)
    h50, h95 = percentiles(post_ms, 50, 95)
    print(
        f"  dispatch (created_at -> assigned_at), {len(dispatch_ms)} tasks: p50 {p50:.1f} ms, "
        f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(dispatch_ms):.1f} ms; "
        f"never assigned within {ASSIGN_TIMEOUT_SECONDS} s: {never_assigned}"
    )
    print(f"  POST /api/v1/tasks round trip: p50 {h50:.1f} ms, p95 {h95:.1f} ms")
    print(
        f"  floor (Celery round trip, send -> effect seen), {len(floor_ms)} jobs: p50 {f50:.1f} ms,"
        f" p95 {f95:.1f} ms, p99 {f99:.1f} ms, max {max(floor_ms):.1f} ms"
    )
    ratio = p95 / f95
    return [
        Result(
            benchmark=f"dispatch (web {server.label}, worker 2, no beat)",
            measured=f"created_at -> assigned_at p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"p99 {p99:.1f} ms ({TASKS} tasks at {RATE}/s)",
            floor=f"Celery round trip p50 {f50:.1f} ms, p95 {f95:.1f} ms, p99 {f99:.1f} ms",
            goal=f"p95 <= {GOAL_P95_MS:.0f} ms: {p95:.1f}; <= {GOAL_FLOOR_RATIO:.0f}x floor p95: "
            f"{ratio:.1f}x; never assigned = 0: {never_assigned}",
            met=p95 <= GOAL_P95_MS and ratio <= GOAL_FLOOR_RATIO and not never_assigned,
        )
    ]


def prepare(http: requests.Session, base_url: str) -> str:
    """A RUNNING session and the agents (all with the tasks' default capability)."""
    api = f"{base_url}/api/v1"
    session = http.post(f"{api}/sessions", json={"title": "dispatch bench"}, timeout=10)
    session.raise_for_status()
    session_id = session.json()["id"]
    http.post(f"{api}/sessions/{session_id}/start", timeout=10).raise_for_status()
    for n in range(AGENTS):
        body = {
            "name": f"dispatch-agent-{n}",
            "type": "BACKEND",
            "capabilities": ["CODE_GENERATION"],
            "max_concurrent_tasks": CAPACITY,
        }
        http.post(f"{api}/agents/register", json=body, timeout=10).raise_for_status()
    return session_id


def create_tasks(
    http: requests.Session, base_url: str, session_id: str, count: int
) -> tuple[list[str], list[float]]:
    """The new tasks' ids, and each POST's round trip in ms."""
    ids, post_ms = [], []
    for n in paced(count, RATE):
        began = time.perf_counter()
        response = http.post(
            f"{base_url}/api/v1/tasks",
            json={"session_id": session_id, "title": f"dispatch task {n}"},
            timeout=10,
        )
        post_ms.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids, post_ms


def floor_trips(send, redis: redis_lib.Redis, count: int) -> list[float]:
    """Round trips of the trivial job, in ms: from the send until its write is seen."""
    trips = []
    for _ in paced(count, RATE):
        token = uuid.uuid4().hex
        began = time.perf_counter()
        send(floor_job.NAME, (token,), {})
        popped = redis.blpop([floor_job.DONE_KEY], timeout=10)
        trips.append((time.perf_counter() - began) * 1000)
        if popped is None or popped[1].decode() != token:
            raise RuntimeError(f"the floor job did not answer as expected: {popped}")
    return trips


def dispatch_latencies(url: str, task_ids: list[str]) -> tuple[list[float], int]:
    """assigned_at - created_at of the tasks, in ms, once none is PENDING (or after the
    timeout); and how many were never assigned."""
    engine = create_engine(url)
    query = text("SELECT created_at, assigned_at FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))")
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + ASSIGN_TIMEOUT_SECONDS
            while True:
                rows = connection.execute(query, {"ids": task_ids}).all()
                connection.rollback()
                pending = sum(row.assigned_at is None for row in rows)
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    finally:
        engine.dispose()
    latencies = [
        (row.assigned_at - row.created_at).total_seconds() * 1000
        for row in rows
        if row.assigned_at is not None
    ]
    return latencies, pending
