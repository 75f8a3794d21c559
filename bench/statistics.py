"""The statistics routes at a million tasks, over HTTP against the Procfile's gunicorn.

A database of its own is filled in SQL (INSERT ... SELECT generate_series): 10,000 agents
(six types, ten pools, a tenth OFFLINE, a twentieth deregistered), 100,000 sessions of
every status over 100 days, 1,000,000 tasks (most finished and held by an agent) and
200,000 failed attempts; then the summary tables the triggers keep are built the way
migration 0010 builds them, and the tables are vacuumed (as autovacuum would).

Then, on one keep-alive connection, in alternating rounds, each route is requested
REQUESTS times and its p95 taken: the floors (`GET /health`: gunicorn and routing;
`GET /api/v1/sessions/{id}`: the whole /api/v1 stack around a primary-key read) and
`GET /api/v1/sessions/statistics` (all, `?pool=`, `?since=` the last 10 days) and
`GET /api/v1/agents/performance` (all, `?pool=`). Goal: p95 < 50 ms each.

`GET /api/v1/agents` (a page of 20) is measured too, with what the per-agent figures add
to it timed in process (`agent_figures` for the page's 20 agents).
"""

from __future__ import annotations

import os
import time
import uuid

import requests
from sqlalchemy import create_engine, text

from bench.common import Result, benchmark_database, percentiles
from bench.stack import web_server
from shared.db import Database
from shared.services import statistics

AGENTS = 10_000
SESSIONS = 100_000
TASKS = 1_000_000
FAILURES = 200_000
REQUESTS = int(os.environ.get("BENCH_STATISTICS_REQUESTS", "300"))
ROUNDS = 3
GOAL_MS = 50.0

FILL = [
    f"""CREATE TEMP TABLE agent_ids AS
        SELECT n, gen_random_uuid() AS id FROM generate_series(0, {AGENTS - 1}) AS n""",
    f"""CREATE TEMP TABLE session_ids AS
        SELECT n, gen_random_uuid() AS id FROM generate_series(0, {SESSIONS - 1}) AS n""",
    """INSERT INTO agents (id, name, pool, type, capabilities, max_concurrent_tasks,
                          current_load, status, last_heartbeat_at, created_at, updated_at,
                          deregistered_at)
       SELECT id, 'agent-' || n, 'pool-' || n % 10,
              (ARRAY['BACKEND','FRONTEND','FULLSTACK','DEVOPS','QA','SECURITY'])[n % 6 + 1],
              ARRAY['CODE_GENERATION'], 5, 0,
              CASE WHEN n % 10 = 0 THEN 'OFFLINE' WHEN n % 3 = 0 THEN 'ACTIVE' ELSE 'IDLE' END,
              now(), now() - n * interval '1 minute', now(),
              CASE WHEN n % 20 = 0 THEN now() END
       FROM agent_ids""",
    """INSERT INTO sessions (id, title, pool, status, type, priority, created_at, updated_at,
                            started_at, completed_at)
       SELECT id, 'session ' || n, 'pool-' || n % 10,
              (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED','RUNNING',
                     'PAUSED','PENDING'])[n % 8 + 1],
              'CODING', 'MEDIUM', now() - n * interval '86.4 seconds', now(),
              CASE WHEN n % 8 < 7 THEN now() - n * interval '86.4 seconds' END,
              CASE WHEN n % 8 < 5
                   THEN now() - n * interval '86.4 seconds' + (n % 600) * interval '1 second'
              END
       FROM session_ids""",
    # Statuses by n % 20: 12 COMPLETED, 2 FAILED, 2 CANCELLED, 1 ASSIGNED, 1 IN_PROGRESS,
    # 1 PENDING, 1 BLOCKED; the held and finished ones by an agent.
    f"""INSERT INTO tasks (id, session_id, title, complexity, status, required_capabilities,
                          assigned_agent_id, attempts, progress, timeout_seconds, created_at,
                          updated_at, completed_at)
        SELECT gen_random_uuid(), s.id, 'task ' || t.n, 'MEDIUM', t.status,
               ARRAY['CODE_GENERATION'],
               CASE WHEN t.status NOT IN ('PENDING', 'BLOCKED', 'CANCELLED') THEN a.id END,
               1, 0, 3600, now(), now(),
               CASE WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
        FROM (
            SELECT n, (ARRAY['COMPLETED','COMPLETED','COMPLETED','COMPLETED','COMPLETED',
                             'COMPLETED','COMPLETED','COMPLETED','COMPLETED','COMPLETED',
                             'COMPLETED','COMPLETED','FAILED','FAILED','CANCELLED',
                             'CANCELLED','ASSIGNED','IN_PROGRESS','PENDING','BLOCKED'])
                      [n % 20 + 1] AS status
            FROM generate_series(0, {TASKS - 1}) AS n
        ) AS t
        JOIN session_ids AS s ON s.n = t.n % {SESSIONS}
        JOIN agent_ids AS a ON a.n = (t.n * 7) % {AGENTS}""",
    # A failed attempt by another agent on every fifth task (a retry someone else took).
    f"""INSERT INTO task_failures (task_id, attempt, agent_id, failed_at)
        SELECT t.id, 1, a.id, now()
        FROM (SELECT id, row_number() OVER () - 1 AS n FROM tasks LIMIT {FAILURES}) AS t
        JOIN agent_ids AS a ON a.n = (t.n * 13) % {AGENTS}""",
    # What the triggers would have kept, built as migration 0010 builds it.
    """INSERT INTO agent_task_totals (agent_id, tasks_completed, tasks_failed)
       SELECT agent_id, sum(completed), sum(failed)
       FROM (
           SELECT assigned_agent_id AS agent_id, count(*) AS completed, 0 AS failed
           FROM tasks WHERE status = 'COMPLETED' AND assigned_agent_id IS NOT NULL
           GROUP BY assigned_agent_id
           UNION ALL
           SELECT agent_id, 0, count(*) FROM task_failures GROUP BY agent_id
       ) AS counts
       GROUP BY agent_id""",
    """INSERT INTO session_status_counts
           (pool, created_on, status, sessions, timed, run_microseconds)
       SELECT pool, (created_at AT TIME ZONE 'UTC')::date, status, count(*),
              count(*) FILTER (WHERE status = 'COMPLETED' AND completed_at IS NOT NULL),
              coalesce(sum(round(extract(epoch FROM completed_at - started_at) * 1000000))
                       FILTER (WHERE status = 'COMPLETED' AND completed_at IS NOT NULL), 0)
       FROM sessions GROUP BY 1, 2, 3""",
]


TRIGGERED = ("sessions", "tasks", "task_failures")


def fill(settings) -> dict[str, int]:
    engine = create_engine(settings.sqlalchemy_url)
    began = time.perf_counter()
    with engine.begin() as connection:
        # Built in bulk below, as the migration builds it, instead of row by row.
        for table in TRIGGERED:
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in FILL:
            connection.execute(text(statement))
        for table in TRIGGERED:
            connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in (
            "agents",
            "sessions",
            "tasks",
            "task_failures",
            "agent_task_totals",
            "session_status_counts",
        ):
            connection.execute(text(f"VACUUM ANALYZE {table}"))
        counts = {
            table: connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("agents", "sessions", "tasks", "task_failures")
        }
        counts["some_session"] = connection.scalar(text("SELECT id FROM sessions LIMIT 1"))
    engine.dispose()
    print(f"  filled in {time.perf_counter() - began:.0f} s: {counts}")
    return counts


def p95_ms(http: requests.Session, url: str) -> float:
    timings = []
    for _ in range(REQUESTS):
        began = time.perf_counter()
        response = http.get(url, timeout=10)
        timings.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
    return percentiles(timings, 95)[0]


def figures_cost_ms(settings, http: requests.Session, base: str) -> float:
    """p95 of `agent_figures` for a page of 20 agents, in process (what GET /agents adds)."""
    page = http.get(f"{base}/api/v1/agents", params={"page_size": 20}, timeout=10).json()
    ids = [uuid.UUID(agent["id"]) for agent in page["items"]]
    database = Database(settings)
    timings = []
    with database.session() as db:
        for _ in range(REQUESTS):
            began = time.perf_counter()
            statistics.agent_figures(db, agent_ids=ids)
            timings.append((time.perf_counter() - began) * 1000)
    database.dispose()
    return percentiles(timings, 95)[0]


def run() -> list[Result]:
    with benchmark_database("statistics") as settings:
        counts = fill(settings)
        with web_server(settings) as server:
            base = server.url
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10 * 86400))
            routes = {
                "GET /health (floor)": "/health",
                "GET /sessions/{id} (floor)": f"/api/v1/sessions/{counts['some_session']}",
                "GET /sessions/statistics": "/api/v1/sessions/statistics",
                "GET /sessions/statistics?pool=": "/api/v1/sessions/statistics?pool=pool-3",
                "GET /sessions/statistics?since=": f"/api/v1/sessions/statistics?since={since}",
                "GET /agents/performance": "/api/v1/agents/performance",
                "GET /agents/performance?pool=": "/api/v1/agents/performance?pool=pool-3",
                "GET /agents (page of 20)": "/api/v1/agents?page_size=20",
            }
            best: dict[str, float] = {}
            with requests.Session() as http:
                for path in routes.values():  # warm up: connections, caches
                    for _ in range(20):
                        http.get(base + path, timeout=10)
                for _ in range(ROUNDS):
                    for label, path in routes.items():
                        p95 = p95_ms(http, base + path)
                        best[label] = min(best.get(label, p95), p95)
                figures_ms = figures_cost_ms(settings, http, base)
    floor = f"/health {best.pop('GET /health (floor)'):.1f} ms, " + (
        f"/sessions/{{id}} {best.pop('GET /sessions/{id} (floor)'):.1f} ms p95"
    )
    agents_page = best.pop("GET /agents (page of 20)")
    for label, value in best.items():
        print(f"  {label:<34} p95 {value:6.1f} ms (best of {ROUNDS} rounds of {REQUESTS})")
    print(
        f"  GET /agents (page of 20)           p95 {agents_page:6.1f} ms, of which the "
        f"figures' query p95 {figures_ms:.2f} ms"
    )
    print(f"  floors: {floor}")
    scale = (
        f"{counts['tasks']:,} tasks, {counts['agents']:,} agents, {counts['sessions']:,} sessions"
    )
    results = [
        Result(
            f"statistics: {label} ({scale})",
            f"p95 {value:.1f} ms",
            floor,
            "< 50 ms",
            value < GOAL_MS,
        )
        for label, value in best.items()
    ]
    results.append(
        Result(
            "statistics: per-agent figures in GET /agents (page of 20)",
            f"+{figures_ms:.2f} ms of p95 {agents_page:.1f} ms",
            floor,
            "< 2 ms added (p95)",
            figures_ms < 2.0,
        )
    )
    return results
