"""Assignment throughput end to end through the jobs: a real Celery worker assigns.

The data of the `assignment` benchmark (bench/assignment.py: 1,000 agents of capacity 10,
10,000 ready tasks in 100 RUNNING sessions, from the same seed) is bulk inserted once.
Then, each time from the same state (assignments undone, outbox emptied, VACUUM ANALYZE):

- the floor: `assign_ready` called in-process in a loop, one transaction a call, until a
  call assigns nothing (what the `assignment` benchmark measures);
- through the jobs: `orchestrator.assign_ready_tasks` sent by name (with the API's job
  sender) to the Procfile's `worker` (prefork, concurrency 2), once, then 4 times at once
  (as a burst of task creations does). Timed from the send until the last assignment is
  committed: the count of ASSIGNED tasks is polled every 25 ms until it has not changed
  for 2 s with the queue empty and no job active; the time of its last change counts.

Each run is checked with SQL (bench/assignment.py CHECKS): no agent over capacity, no
task with two `task.assigned` events, no PENDING task left that an agent with room could
take. Goal: >= 1,000 assignments a second through the jobs, every check passing.
"""

from __future__ import annotations

import time

from celery import Celery
from sqlalchemy import text

from bench import assignment
from bench.common import Result, benchmark_database
from bench.stack import celery_worker
from orchestrator_api.job_sender import make_job_sender
from shared import job_names
from shared.db import Database

REDIS_DB = 13
BURSTS = (1, 4)  # jobs sent at once
GOAL_PER_SECOND = 1_000
POLL_SECONDS = 0.025
QUIET_SECONDS = 2.0
TIMEOUT_SECONDS = 120

RESET_SQL = (
    "UPDATE tasks SET status = 'PENDING', assigned_agent_id = NULL, assigned_at = NULL, "
    "deadline_at = NULL WHERE status <> 'PENDING'",
    "UPDATE agents SET status = 'IDLE' WHERE status <> 'IDLE'",
    "TRUNCATE outbox_events RESTART IDENTITY",
)
ASSIGNED_SQL = text("SELECT count(*) FROM tasks WHERE status = 'ASSIGNED'")


def run() -> list[Result]:
    with benchmark_database("engine_throughput", REDIS_DB) as settings:
        database = Database(settings)
        send = make_job_sender(settings)
        try:
            assignment.populate(database)
            reset(database)
            floor = in_process(database)
            found = checks(database)
            print(f"  floor, in-process: {describe(*floor)}; checks {verdict(found)}")
            results = []
            with celery_worker(settings) as _worker:
                for burst in BURSTS:
                    reset(database)
                    assigned, seconds = through_jobs(database, send, burst)
                    found = checks(database)
                    print(f"  {burst} job(s) at once: {describe(assigned, seconds)}; checks:")
                    for name, count in found.items():
                        print(f"    {name}: {count}")
                    results.append(result(burst, assigned, seconds, floor, found))
            return results
        finally:
            send.client.close()
            database.dispose()


def reset(database: Database) -> None:
    """Every task PENDING and every agent IDLE again, as after the bulk insert."""
    with database.engine.begin() as connection:
        for sql in RESET_SQL:
            connection.execute(text(sql))
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def in_process(database: Database) -> tuple[int, float]:
    assigned = 0
    began = time.perf_counter()
    while True:
        with database.transaction() as db:
            pairs = assignment.assign_ready(db)
        if not pairs:
            return assigned, time.perf_counter() - began
        assigned += len(pairs)


def through_jobs(database: Database, send, burst: int) -> tuple[int, float]:
    """Send the jobs; return the tasks assigned and the seconds until the last commit."""
    monitor = Celery("bench", broker=database.settings.redis_url, set_as_current=False)
    with database.engine.connect() as connection, monitor.connection_for_read() as broker:
        began = last_change = time.perf_counter()
        for _ in range(burst):
            send(job_names.ASSIGN_READY_TASKS, (), {})
        assigned = 0
        while time.perf_counter() - began < TIMEOUT_SECONDS:
            time.sleep(POLL_SECONDS)
            count = connection.scalar(ASSIGNED_SQL)
            connection.rollback()
            now = time.perf_counter()
            if count != assigned:
                assigned, last_change = count, now
            elif now - last_change > QUIET_SECONDS and idle(monitor, broker):
                break
        else:
            raise RuntimeError(f"the jobs did not finish within {TIMEOUT_SECONDS} s")
    monitor.close()
    return assigned, last_change - began


def idle(monitor: Celery, broker) -> bool:
    """No job waits in the queue and none runs."""
    if broker.default_channel.client.llen("celery"):
        return False
    active = monitor.control.inspect(timeout=1).active() or {}
    return not any(active.values())


def checks(database: Database) -> dict[str, int]:
    with database.engine.connect() as connection:
        return {name: connection.scalar(text(sql)) for name, sql in assignment.CHECKS.items()}


def verdict(found: dict[str, int]) -> str:
    return "pass" if not any(found.values()) else f"FAIL {found}"


def describe(assigned: int, seconds: float) -> str:
    return f"{assigned:,} tasks in {seconds:.2f} s, {assigned / seconds:,.0f} tasks/s"


def result(
    burst: int, assigned: int, seconds: float, floor: tuple[int, float], found: dict
) -> Result:
    per_second = assigned / seconds
    floor_per_second = floor[0] / floor[1]
    return Result(
        benchmark=f"engine_throughput ({burst} job{'s' if burst > 1 else ''} at once, worker 2)",
        measured=f"{per_second:,.0f} tasks/s ({assigned:,} tasks in {seconds:.2f} s)",
        floor=f"in-process assign_ready {floor_per_second:,.0f} tasks/s",
        goal=f">= {GOAL_PER_SECOND:,} tasks/s; checks {verdict(found)}",
        met=per_second >= GOAL_PER_SECOND and not any(found.values()),
    )
