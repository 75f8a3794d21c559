"""Throughput of the assignment service, in-process (no HTTP, no Celery).

1,000 agents (10 tasks each at most, mixed capabilities) and 10,000 ready PENDING tasks in
RUNNING sessions (each needs capabilities that some agent has) are bulk inserted; then
`assign_ready(db)` is called in a loop, one transaction a call, until it assigns nothing.
Goal: >= 1,000 tasks assigned a second, run twice: everything in one big pool, and the
agents and sessions spread over 10 pools (assignment matches only within a pool). The
floor: as many `SELECT 1` transactions.
The end state is checked with SQL: no agent over its capacity, no task assigned twice, and
no PENDING task left that an agent with room could take.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

from sqlalchemy import insert, text

from bench.common import Result, benchmark_database
from shared.db import Database
from shared.enums import AgentStatus, AgentType, Capability, Priority, SessionStatus, TaskStatus
from shared.models import Agent, Task, WorkSession
from shared.models.types import utcnow
from shared.services.assignment import assign_ready

AGENTS = 1_000
TASKS = 10_000
SESSIONS = 100
MAX_TASKS_PER_AGENT = 10
GOAL_TASKS_PER_SECOND = 1_000

CHECKS = {
    "agents over capacity": """
        SELECT count(*) FROM agents AS a WHERE a.max_concurrent_tasks < (
            SELECT count(*) FROM tasks AS t
            WHERE t.assigned_agent_id = a.id AND t.status IN ('ASSIGNED', 'IN_PROGRESS'))""",
    "tasks assigned more than once": """
        SELECT count(*) FROM (
            SELECT payload->>'task_id' FROM outbox_events WHERE type = 'task.assigned'
            GROUP BY 1 HAVING count(*) > 1) AS twice""",
    "tasks given to an agent of another pool": """
        SELECT count(*) FROM tasks AS t JOIN sessions AS s ON s.id = t.session_id
        JOIN agents AS a ON a.id = t.assigned_agent_id WHERE a.pool <> s.pool""",
    "assignable tasks left PENDING": """
        SELECT count(*) FROM tasks AS t WHERE t.status = 'PENDING' AND EXISTS (
            SELECT 1 FROM agents AS a
            WHERE a.status IN ('IDLE', 'ACTIVE') AND a.current_load < 100
              AND a.capabilities @> t.required_capabilities
              AND a.pool = (SELECT s.pool FROM sessions AS s WHERE s.id = t.session_id)
              AND a.max_concurrent_tasks > (
                  SELECT count(*) FROM tasks AS h WHERE h.assigned_agent_id = a.id
                  AND h.status IN ('ASSIGNED', 'IN_PROGRESS')))""",
}


POOL_LAYOUTS = (1, 10)  # one big pool; the fleet and the sessions spread over ten


def run() -> list[Result]:
    results = []
    for pools in POOL_LAYOUTS:
        with benchmark_database("assignment") as settings:
            database = Database(settings)
            try:
                began = time.perf_counter()
                populate(database, pools=pools)
                print(
                    f"  inserted {AGENTS:,} agents and {TASKS:,} tasks in {pools} pool(s) in "
                    f"{time.perf_counter() - began:.1f} s"
                )
                results.append(measure(database, pools=pools))
            finally:
                database.dispose()
    return results


def populate(database: Database, *, pools: int) -> None:
    rng = random.Random(20261126)
    capabilities = [c.value for c in Capability]
    now = utcnow()
    agents = [
        {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "name": f"bench-agent-{n}",
            "pool": f"pool-{n % pools}",
            "type": rng.choice(list(AgentType)).value,
            "capabilities": rng.sample(capabilities, rng.randint(1, 4)),
            "max_concurrent_tasks": MAX_TASKS_PER_AGENT,
            "current_load": rng.randint(0, 80),
            "status": AgentStatus.IDLE.value,
            "last_heartbeat_at": now,
        }
        for n in range(AGENTS)
    ]
    sessions = [
        {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "title": f"bench session {n}",
            "pool": f"pool-{n % pools}",
            "status": SessionStatus.RUNNING.value,
            "priority": rng.choice(list(Priority)).value,
            "started_at": now,
        }
        for n in range(SESSIONS)
    ]
    tasks = []
    for n in range(TASKS):
        session = rng.choice(sessions)
        fitting_agent = rng.choice(
            [a for a in agents[:50] if a["pool"] == session["pool"]] or agents
        )["capabilities"]
        tasks.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "session_id": session["id"],
                "title": f"bench task {n}",
                "status": TaskStatus.PENDING.value,
                "required_capabilities": rng.sample(fitting_agent, min(2, len(fitting_agent))),
                "timeout_seconds": 3600,
                "created_at": now + timedelta(microseconds=n),
            }
        )
    with database.engine.begin() as connection:
        for model, rows in ((Agent, agents), (WorkSession, sessions), (Task, tasks)):
            connection.execute(insert(model), rows)
        connection.execute(text("ANALYZE"))


def measure(database: Database, *, pools: int) -> Result:
    transactions = assigned = 0
    assigned_ids: set = set()
    began = time.perf_counter()
    while True:
        with database.transaction() as db:
            pairs = assign_ready(db)
        transactions += 1
        if not pairs:
            break
        assigned += len(pairs)
        assigned_ids.update(task_id for task_id, _ in pairs)
    assign_seconds = time.perf_counter() - began

    began = time.perf_counter()
    for _ in range(transactions):
        with database.transaction() as db:
            db.execute(text("SELECT 1"))
    floor_seconds = time.perf_counter() - began

    with database.engine.connect() as connection:
        found = {name: connection.scalar(text(sql)) for name, sql in CHECKS.items()}
        still_assigned = connection.scalar(
            text("SELECT count(*) FROM tasks WHERE status = 'ASSIGNED'")
        )
    found["returned twice by assign_ready"] = assigned - len(assigned_ids)
    found["returned but not ASSIGNED in the table"] = assigned - still_assigned

    per_second = assigned / assign_seconds
    batches = transactions - 1
    print(
        f"  assigned {assigned:,} of {TASKS:,} tasks in {batches} batches, "
        f"{assign_seconds:.2f} s: {per_second:,.0f} tasks/s, "
        f"{1000 * assign_seconds / transactions:.1f} ms a transaction"
    )
    print(
        f"  floor: {transactions} SELECT 1 transactions in {floor_seconds * 1000:.1f} ms, "
        f"{1000 * floor_seconds / transactions:.2f} ms a transaction"
    )
    for name, count in found.items():
        print(f"  check: {name}: {count}")
    return Result(
        benchmark=f"assignment (in-process, {pools} pool{'s' if pools > 1 else ''})",
        measured=f"{per_second:,.0f} tasks/s ({assigned:,} tasks, {batches} batches, "
        f"{1000 * assign_seconds / transactions:.0f} ms/batch)",
        floor=f"SELECT 1 transaction {1000 * floor_seconds / transactions:.2f} ms",
        goal=f">= {GOAL_TASKS_PER_SECOND:,} tasks/s; checks "
        + ("pass" if not any(found.values()) else "FAIL"),
        met=per_second >= GOAL_TASKS_PER_SECOND and not any(found.values()),
    )
