"""What an idle stack costs (issue 19): the Procfile's `web` (2 processes by default),
`worker` and `beat` on a database of their own, with nothing to do, for a minute.

Counted over the minute: the jobs the worker ran, by name (Celery's own per-worker totals,
`inspect stats`); the table reads in the stack's database (sequential and index scans,
`pg_stat_user_tables`: about one per query), of all tables and of `outbox_events` (the
event path's); the CPU the web processes used; then the same with the web processes
alone. The floor, in the same run: the reads with nothing running (what measuring costs).
Goal: each web process under 1% of a core, and about one query a second each (the relay's
safety poll).
"""

from __future__ import annotations

import tempfile
import time

from celery import Celery
from sqlalchemy import create_engine, text

from bench.common import Result, benchmark_database
from bench.stack import celery_worker, cpu_seconds, procfile_process, web_server, worker_pids

REDIS_DB = 6
SETTLE_SECONDS = 20
IDLE_SECONDS = 60
GOAL_WEB_CPU = 0.01  # of a core, per web process


def run() -> list[Result]:
    with benchmark_database("idle", REDIS_DB) as settings:
        engine = create_engine(settings.sqlalchemy_url, pool_size=1)
        try:
            floor = transactions_over(engine, IDLE_SECONDS / 2)  # nothing running
            with (
                tempfile.TemporaryDirectory() as tmp,
                web_server(settings) as server,
                celery_worker(settings),
                procfile_process("beat", settings, CELERY_BEAT_SCHEDULE=f"{tmp}/beat"),
            ):
                web = worker_pids(server)
                client = Celery("bench", broker=settings.redis_url, set_as_current=False)
                time.sleep(SETTLE_SECONDS)
                jobs_before = job_totals(client)
                web_cpu_before = cpu_seconds(web)
                transactions = transactions_over(engine, IDLE_SECONDS)
                web_cpu = (cpu_seconds(web) - web_cpu_before) / IDLE_SECONDS
                jobs = {
                    name: count - jobs_before.get(name, 0)
                    for name, count in job_totals(client).items()
                    if count - jobs_before.get(name, 0)
                }
                client.close()
            # the web processes alone: a fresh web, no worker, no beat
            with web_server(settings) as server:
                time.sleep(SETTLE_SECONDS)
                web_only = transactions_over(engine, IDLE_SECONDS)
                web_count = len(worker_pids(server))
        finally:
            engine.dispose()

    print(f"  web {server.label}, worker prefork 2, beat; idle for {IDLE_SECONDS} s")
    print(f"  jobs a minute: {sum(jobs.values())} " + str(dict(sorted(jobs.items()))))
    print(
        f"  table reads a minute (all tables / outbox_events): whole stack "
        f"{transactions[0]:.0f} / {transactions[1]:.0f}; web alone {web_only[0]:.0f} / "
        f"{web_only[1]:.0f}; nothing running {floor[0]:.0f} / {floor[1]:.0f}"
    )
    print(f"  web CPU: {web_cpu * 100:.2f}% of a core for {len(web)} processes")
    per_web_query_rate = (web_only[0] - floor[0]) / 60 / web_count
    return [
        Result(
            benchmark=f"idle stack (web {server.label}, worker 2, beat)",
            measured=f"{sum(jobs.values())} jobs/min; {transactions[0]:.0f} table reads/min "
            f"(web alone {web_only[0]:.0f}); web CPU {web_cpu * 100:.2f}% of a core "
            f"({len(web)} processes)",
            floor=f"{floor[0]:.0f} table reads/min with nothing running",
            goal=f"web < {GOAL_WEB_CPU * 100:.0f}% of a core each: "
            f"{web_cpu / len(web) * 100:.2f}%; web <= ~1 query/s each: "
            f"{per_web_query_rate:.2f}",
            met=web_cpu / len(web) < GOAL_WEB_CPU and per_web_query_rate <= 1.2,
        )
    ]


def transactions_over(engine, seconds: float) -> tuple[float, float]:
    """Table reads (sequential and index scans, pg_stat_user_tables) during `seconds`, a
    minute's worth: of every table, and of outbox_events (the event path's). Counted by
    table rather than by transaction: autovacuum's own transactions in a fresh database
    would swamp an idle stack's."""
    query = text(
        "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0) AS all_,"
        " coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0))"
        " FILTER (WHERE relname = 'outbox_events'), 0) AS outbox FROM pg_stat_user_tables"
    )

    def sample():
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = connection.execute(query).one()
            connection.rollback()
            return float(row.all_), float(row.outbox)

    before = sample()  # (a backend's figures reach these within 10 s: the same lag both ends)
    time.sleep(seconds)
    after = sample()
    return (after[0] - before[0]) * 60 / seconds, (after[1] - before[1]) * 60 / seconds


def job_totals(client: Celery) -> dict[str, int]:
    """Jobs run so far by name, over every worker (Celery's per-worker totals)."""
    totals: dict[str, int] = {}
    for stats in (client.control.inspect(timeout=2).stats() or {}).values():
        for name, count in stats.get("total", {}).items():
            totals[name] = totals.get(name, 0) + count
    return totals
