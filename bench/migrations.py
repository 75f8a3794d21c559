"""The migrations since pools (0007 onwards) on a large database: 1,000,000 tasks, 100,000
sessions, 10,000 agents, filled at revision 0006 (before pools). Each revision is timed,
and meanwhile a probe does what the API does all day (insert a session, read an agent by
id, update a task, each its own transaction) every 20 ms on its own connection: its
slowest call is the longest the migration blocked the API.

Goals (issue 15): every revision under a minute; no probe call blocked over a second. The
floor is the probe's p50 before the migrations began, in the same run.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import ROOT, SERVER_URL, Result, percentiles
from shared.config import Settings

TASKS, SESSIONS, AGENTS = 1_000_000, 100_000, 10_000
START = "0006"
PROBE_INTERVAL = 0.02

FILL = [
    f"""CREATE TEMP TABLE agent_ids AS
        SELECT n, gen_random_uuid() AS id FROM generate_series(0, {AGENTS - 1}) AS n""",
    f"""CREATE TEMP TABLE session_ids AS
        SELECT n, gen_random_uuid() AS id FROM generate_series(0, {SESSIONS - 1}) AS n""",
    """INSERT INTO agents (id, name, type, capabilities, max_concurrent_tasks, current_load,
                          status, last_heartbeat_at, created_at, updated_at)
       SELECT id, 'agent-' || n, 'BACKEND', ARRAY['CODE_GENERATION'], 5, 0, 'IDLE', now(),
              now(), now()
       FROM agent_ids""",
    """INSERT INTO sessions (id, title, status, type, priority, created_at, updated_at)
       SELECT id, 'session ' || n,
              (ARRAY['COMPLETED','FAILED','CANCELLED','RUNNING','PENDING'])[n % 5 + 1],
              'CODING', 'MEDIUM', now(), now()
       FROM session_ids""",
    f"""INSERT INTO tasks (id, session_id, title, complexity, status, required_capabilities,
                          assigned_agent_id, attempts, progress, timeout_seconds, created_at,
                          updated_at, completed_at)
        SELECT gen_random_uuid(), s.id, 'task ' || t.n, 'MEDIUM', t.status,
               ARRAY['CODE_GENERATION'],
               CASE WHEN t.status IN ('COMPLETED', 'FAILED', 'IN_PROGRESS') THEN a.id END,
               1, 0, 3600, now(), now(),
               CASE WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
        FROM (
            SELECT n, (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED',
                             'IN_PROGRESS','PENDING','BLOCKED'])[n % 8 + 1] AS status
            FROM generate_series(0, {TASKS - 1}) AS n
        ) AS t
        JOIN session_ids AS s ON s.n = t.n % {SESSIONS}
        JOIN agent_ids AS a ON a.n = t.n % {AGENTS}""",
]


@contextmanager
def database_at(revision: str):
    name = f"orch_bench_migrations_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, log_level="WARNING")
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        upgrade(settings, revision)
        yield settings
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def upgrade(settings: Settings, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = settings.sqlalchemy_url
    config.attributes["skip_logging"] = True
    command.upgrade(config, revision)


def revisions_after(start: str) -> list[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    ordered = [r.revision for r in reversed(list(script.walk_revisions()))]
    return ordered[ordered.index(start) + 1 :]


class Probe(threading.Thread):
    """The API's everyday statements, one transaction each, every PROBE_INTERVAL."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(settings.sqlalchemy_url, pool_size=1)
        self.stopped = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (started, seconds)
        with self.engine.connect() as connection:
            self.agent_id = connection.scalar(text("SELECT id FROM agents LIMIT 1"))
            self.task_id = connection.scalar(
                text("SELECT id FROM tasks WHERE status = 'PENDING' LIMIT 1")
            )

    def run(self) -> None:
        while not self.stopped.is_set():
            began = time.perf_counter()
            with self.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO sessions (id, title, status, type, priority, created_at,"
                        " updated_at) VALUES (gen_random_uuid(), 'probe', 'PENDING', 'CODING',"
                        " 'MEDIUM', now(), now())"
                    )
                )
            with self.engine.begin() as connection:
                connection.execute(
                    text("SELECT * FROM agents WHERE id = :id"), {"id": self.agent_id}
                )
            with self.engine.begin() as connection:
                connection.execute(
                    text("UPDATE tasks SET updated_at = now() WHERE id = :id"), {"id": self.task_id}
                )
            self.samples.append((began, time.perf_counter() - began))
            self.stopped.wait(PROBE_INTERVAL)

    def slowest_between(self, start: float, end: float) -> float:
        within = [s for began, s in self.samples if start <= began <= end]
        return max(within, default=0.0)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        self.engine.dispose()


def run() -> list[Result]:
    with database_at(START) as settings:
        engine = create_engine(settings.sqlalchemy_url)
        began = time.perf_counter()
        with engine.begin() as connection:
            for statement in FILL:
                connection.execute(text(statement))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("agents", "sessions", "tasks"):
                connection.execute(text(f"VACUUM ANALYZE {table}"))
        engine.dispose()
        print(
            f"  filled {TASKS:,} tasks, {SESSIONS:,} sessions, {AGENTS:,} agents "
            f"at {START} in {time.perf_counter() - began:.0f} s"
        )
        probe = Probe(settings)
        probe.start()
        time.sleep(2)  # the floor: the probe alone
        floor = percentiles([s for _, s in probe.samples], 50)[0]
        timings = []
        for revision in revisions_after(START):
            start = time.perf_counter()
            upgrade(settings, revision)
            end = time.perf_counter()
            blocked = probe.slowest_between(start - PROBE_INTERVAL, end)
            timings.append((revision, end - start, blocked))
            print(
                f"  {revision}: {end - start:6.2f} s, probe's slowest call {blocked * 1000:7.1f} ms"
            )
        probe.stop()
    longest = max(t for _, t, _ in timings)
    worst = max(b for _, _, b in timings)
    slowest_revision = max(timings, key=lambda t: t[1])[0]
    return [
        Result(
            "migrations 0007+ on 1M tasks: longest revision",
            f"{longest:.1f} s ({slowest_revision})",
            "-",
            "< 60 s",
            longest < 60,
        ),
        Result(
            "migrations 0007+ on 1M tasks: API blocked at most",
            f"{worst * 1000:.0f} ms",
            f"probe p50 {floor * 1000:.1f} ms",
            "< 1,000 ms",
            worst < 1.0,
        ),
    ]
