"""The heartbeat expiry sweep, in-process: its cost should follow the expired agents, not
the size of the fleet.

`shared.services.sweeps.expire_heartbeats` runs in one `Database.transaction()` on two
databases of their own (no Redis): a fleet of 10,000 agents and one of 100,000. In both,
1,000 agents are past the timeout and 100 of them hold 2 ASSIGNED tasks each (200 tasks
are released); the live agents hold one ASSIGNED task per 10 agents. 5 sweeps a size,
alternating between the sizes so a noisy moment hits both; the median counts. Before
each, the expired agents and their tasks are put back as they were (statuses, holders,
attempts), the outbox is emptied and VACUUM ANALYZE runs.

The floor, after each sweep: the same state changes as three set-based statements in one
transaction (1,000 agents OFFLINE, 200 tasks PENDING, 1,200 events).
The agent-selection query of the sweep (as it ran) is shown with EXPLAIN ANALYZE.
Goals: <= 200 ms at each size, 100k <= 1.5x 10k, and the selection uses the partial index
ix_agents_online_last_heartbeat_at.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta

from sqlalchemy import event, insert, text

from bench.common import Result, fresh_database
from shared.db import Database
from shared.models import Agent, Task, WorkSession
from shared.models.types import utcnow
from shared.services.sweeps import expire_heartbeats

SIZES = (10_000, 100_000)
EXPIRED = 1_000
HOLDERS = 100  # of the expired agents, each holding TASKS_PER_HOLDER tasks
TASKS_PER_HOLDER = 2
LIVE_AGENTS_PER_TASK = 10
RUNS = 5
TIMEOUT_SECONDS = 3600  # HEARTBEAT_TIMEOUT_SECONDS: live agents stay live however long this runs
INDEX = "ix_agents_online_last_heartbeat_at"
GOAL_MS = 200
GOAL_RATIO = 1.5

FLOOR_SQL = (
    "UPDATE agents SET status = 'OFFLINE', updated_at = now() "
    "WHERE id = ANY(CAST(:agents AS uuid[]))",
    "UPDATE tasks SET status = 'PENDING', assigned_agent_id = NULL, assigned_at = NULL, "
    "deadline_at = NULL, attempts = attempts + 1, error = 'floor' "
    "WHERE id = ANY(CAST(:tasks AS uuid[]))",
    "INSERT INTO outbox_events (type, payload) SELECT 'agent.status_changed', "
    "jsonb_build_object('agent_id', id) FROM unnest(CAST(:agents AS uuid[])) AS id "
    "UNION ALL SELECT 'task.status_changed', jsonb_build_object('task_id', id) "
    "FROM unnest(CAST(:tasks AS uuid[])) AS id",
)


class Fleet:
    """Bulk inserts the agents and tasks, and puts the expired ones back between runs."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.rng = random.Random(20261126)
        self.now = utcnow()
        self.session_id = self._uuid()
        self.size = 0
        self.expired: list[str] = []
        self.held: list[tuple[str, str]] = []  # (task, agent) of the expired holders
        with database.engine.begin() as connection:
            connection.execute(
                insert(WorkSession),
                [{"id": self.session_id, "title": "expiry bench", "status": "RUNNING"}],
            )

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def grow(self, size: int) -> None:
        """Agents up to `size`; the first EXPIRED of them are past the timeout."""
        agents, tasks = [], []
        for n in range(self.size, size):
            expired = n < EXPIRED
            holds = TASKS_PER_HOLDER if n < HOLDERS else int(not expired and n % 10 == 0)
            agent_id = self._uuid()
            age = timedelta(days=2, seconds=-n) if expired else timedelta(seconds=n % 20)
            agents.append(
                {
                    "id": agent_id,
                    "name": f"expiry-agent-{n}",
                    "type": "BACKEND",
                    "capabilities": ["CODE_GENERATION"],
                    "max_concurrent_tasks": 5,
                    "status": "ACTIVE" if holds else "IDLE",
                    "last_heartbeat_at": self.now - age,
                }
            )
            for _ in range(holds):
                tasks.append(self._held_task(agent_id))
                if expired:
                    self.held.append((str(tasks[-1]["id"]), str(agent_id)))
            if expired:
                self.expired.append(str(agent_id))
        with self.database.engine.begin() as connection:
            for start in range(0, len(agents), 10_000):
                connection.execute(insert(Agent), agents[start : start + 10_000])
            if tasks:
                connection.execute(insert(Task), tasks)
        self.size = size

    def _held_task(self, agent_id: uuid.UUID) -> dict:
        return {
            "id": self._uuid(),
            "session_id": self.session_id,
            "title": "held task",
            "status": "ASSIGNED",
            "required_capabilities": ["CODE_GENERATION"],
            "timeout_seconds": 3600,
            "assigned_agent_id": agent_id,
            "assigned_at": self.now,
            "deadline_at": self.now + timedelta(days=1),
        }

    def restore(self) -> None:
        """The expired agents online again, their tasks held again; an empty outbox."""
        tasks, holders = zip(*self.held, strict=True)
        with self.database.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE agents SET status = CASE WHEN id = ANY(CAST(:holders AS uuid[])) "
                    "THEN 'ACTIVE' ELSE 'IDLE' END WHERE id = ANY(CAST(:expired AS uuid[]))"
                ),
                {"holders": list(set(holders)), "expired": self.expired},
            )
            connection.execute(
                text(
                    "UPDATE tasks SET status = 'ASSIGNED', assigned_agent_id = h.agent, "
                    "assigned_at = :now, deadline_at = :deadline, attempts = 0, error = NULL "
                    "FROM unnest(CAST(:tasks AS uuid[]), CAST(:holders AS uuid[])) "
                    "AS h(task, agent) WHERE tasks.id = h.task"
                ),
                {
                    "tasks": list(tasks),
                    "holders": list(holders),
                    "now": self.now,
                    "deadline": self.now + timedelta(days=1),
                },
            )
            connection.execute(text("TRUNCATE outbox_events"))
        with self.database.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("VACUUM ANALYZE agents, tasks, outbox_events"))

    def check(self) -> None:
        """After a sweep (or the floor): exactly the expected agents and tasks changed."""
        with self.database.engine.connect() as connection:
            offline = connection.scalar(text("SELECT count(*) FROM agents WHERE status='OFFLINE'"))
            pending = connection.scalar(text("SELECT count(*) FROM tasks WHERE status='PENDING'"))
        if (offline, pending) != (EXPIRED, len(self.held)):
            raise RuntimeError(
                f"expected {EXPIRED} OFFLINE, {len(self.held)} PENDING; got {offline}, {pending}"
            )


def run() -> list[Result]:
    with ExitStack() as stack:
        fleets = {}
        for size in SIZES:
            settings = stack.enter_context(fresh_database(f"expiry_{size // 1000}k"))
            database = Database(settings.with_overrides(heartbeat_timeout_seconds=TIMEOUT_SECONDS))
            stack.callback(database.dispose)
            began = time.perf_counter()
            fleets[size] = Fleet(database)
            fleets[size].grow(size)
            print(f"  {size:,} agents inserted in {time.perf_counter() - began:.1f} s")
        runs: dict[int, list] = {size: [] for size in SIZES}
        for _ in range(RUNS):  # the sizes alternate, so a noisy moment hits both
            for size, fleet in fleets.items():
                runs[size].append((sweep(fleet), floor(fleet)))
        return [result({size: summarize(fleets[size], runs[size]) for size in SIZES})]


def sweep(fleet: Fleet) -> tuple[float, list[tuple[str, dict]]]:
    """One sweep from the restored state: its ms and the statements it ran."""
    statements: list[tuple[str, dict]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    fleet.restore()
    event.listen(fleet.database.engine, "before_cursor_execute", record)
    try:
        began = time.perf_counter()
        with fleet.database.transaction() as db:
            expired = expire_heartbeats(db)
        elapsed = (time.perf_counter() - began) * 1000
    finally:
        event.remove(fleet.database.engine, "before_cursor_execute", record)
    if expired != EXPIRED:
        raise RuntimeError(f"the sweep expired {expired} agents, not {EXPIRED}")
    fleet.check()
    return elapsed, statements


def floor(fleet: Fleet) -> float:
    """The same state changes as three set-based statements, in ms."""
    fleet.restore()
    tasks = [task for task, _ in fleet.held]
    began = time.perf_counter()
    with fleet.database.transaction() as db:
        for sql in FLOOR_SQL:
            db.execute(text(sql), {"agents": fleet.expired, "tasks": tasks})
    elapsed = (time.perf_counter() - began) * 1000
    fleet.check()
    return elapsed


def summarize(fleet: Fleet, runs: list) -> dict:
    sweeps = [ms for (ms, _), _ in runs]
    statements = runs[-1][0][1]
    fleet.restore()
    selection = next(s for s in statements if "FROM agents" in s[0] and "FOR UPDATE" in s[0])
    plan = explain(fleet.database, *selection)
    timing = {
        "sweep_ms": statistics.median(sweeps),
        "floor_ms": statistics.median(floor_ms for _, floor_ms in runs),
        "statements": len(statements),
        "uses_index": INDEX in plan,
    }
    print(
        f"  {fleet.size:,} agents: sweep median {timing['sweep_ms']:.1f} ms of {RUNS} "
        f"({', '.join(f'{ms:.0f}' for ms in sweeps)}), {len(statements)} statements; "
        f"floor median {timing['floor_ms']:.1f} ms"
    )
    print("    EXPLAIN ANALYZE of the sweep's agent selection:")
    print("\n".join(f"      {line}" for line in plan.splitlines()))
    return timing


def explain(database: Database, statement: str, parameters: dict) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement as the sweep ran it; rolled back."""
    with database.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
        plan = "\n".join(row[0] for row in rows)
        connection.rollback()
    return plan


def result(timings: dict[int, dict]) -> Result:
    small, large = (timings[size] for size in SIZES)
    ratio = large["sweep_ms"] / small["sweep_ms"]
    slowest = max(small["sweep_ms"], large["sweep_ms"])
    indexed = small["uses_index"] and large["uses_index"]
    return Result(
        benchmark="expiry (in-process, 1,000 expired, 200 tasks released)",
        measured=f"10k agents {small['sweep_ms']:.0f} ms, 100k agents {large['sweep_ms']:.0f} ms "
        f"({large['statements']} statements)",
        floor=f"set-based writes {small['floor_ms']:.0f} ms / {large['floor_ms']:.0f} ms",
        goal=f"<= {GOAL_MS} ms: {slowest:.0f}; 100k/10k <= {GOAL_RATIO}: {ratio:.2f}; "
        f"partial index used: {'yes' if indexed else 'NO'}",
        met=slowest <= GOAL_MS and ratio <= GOAL_RATIO and indexed,
    )
