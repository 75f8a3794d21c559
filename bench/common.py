"""What every benchmark shares: a database of its own, the result row, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass(frozen=True)
class Result:
    """One line of the summary: the figure, the floor measured in the same run, the goal."""

    benchmark: str
    measured: str
    floor: str
    goal: str
    met: bool


@contextmanager
def benchmark_database(label: str) -> Iterator[Settings]:
    """A freshly migrated database of this run's own (dropped at the end, even on failure)
    and the benchmark Redis db index (flushed before and after)."""
    name = f"orch_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, redis_url=REDIS_URL, log_level="WARNING")
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    flush_redis = redis.Redis.from_url(REDIS_URL).flushdb
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        _migrate(settings)
        flush_redis()
        yield settings
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        flush_redis()


def _migrate(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = settings.sqlalchemy_url
    config.attributes["skip_logging"] = True
    command.upgrade(config, "head")


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    engine = create_engine(SERVER_URL)
    with engine.connect() as connection:
        postgres = connection.scalar(text("SHOW server_version"))
    engine.dispose()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": model,
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "postgresql": postgres,
        "redis": redis.Redis.from_url(REDIS_URL).info("server")["redis_version"],
        "kernel": platform.release(),
        "load average": " ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)",
        "wrk": _output(["wrk", "--version"]).split(" Copyright")[0],
        "code": _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        + (" + uncommitted changes" if _output(["git", "-C", str(ROOT), "diff", "HEAD"]) else ""),
    }


def _output(command: list[str]) -> str:
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (run.stdout or run.stderr).strip()
