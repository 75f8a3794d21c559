"""What every benchmark shares: a database of its own, the result row, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
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
# Test runs claim a free Redis db index with this key (tests/conftest.py): a benchmark
# refuses an index a test run holds, and holds its own the same way while it runs.
CLAIM_KEY = "orchestrator-test-run"


@dataclass(frozen=True)
class Result:
    """One line of the summary: the figure, the floor measured in the same run, the goal."""

    benchmark: str
    measured: str
    floor: str
    goal: str
    met: bool


@contextmanager
def benchmark_database(label: str, redis_db: int | None = None) -> Iterator[Settings]:
    """A freshly migrated database of this run's own (dropped at the end, even on failure)
    and a Redis db index (default: that of BENCH_REDIS_URL), flushed before and after."""
    redis_url = REDIS_URL if redis_db is None else f"{REDIS_URL.rsplit('/', 1)[0]}/{redis_db}"
    client = redis.Redis.from_url(redis_url)
    claim = client.get(CLAIM_KEY)
    if claim is not None and not _stale_bench_claim(claim.decode()):
        raise RuntimeError(f"Redis {redis_url} is in use (claimed by {claim.decode()!r})")
    client.flushdb()
    client.set(CLAIM_KEY, f"bench {label} {os.getpid()}", ex=3 * 3600)
    try:
        with fresh_database(label) as settings:
            yield settings.with_overrides(redis_url=redis_url)
    finally:
        client.flushdb()
        client.close()


@contextmanager
def fresh_database(label: str) -> Iterator[Settings]:
    """A freshly migrated database of this run's own, dropped at the end, even on failure
    (for a benchmark that needs no Redis, or a second database)."""
    name = f"orch_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, redis_url=REDIS_URL, log_level="WARNING")
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        _migrate(settings)
        yield settings
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def percentiles(values: list[float], *points: int) -> list[float]:
    """The given percentiles (1 to 99) of the values, by statistics.quantiles."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[point - 1] for point in points]


def paced(count: int, per_second: float) -> Iterator[int]:
    """0 .. count-1, each at its time on a fixed schedule (a late one does not shift the rest)."""
    began = time.perf_counter()
    for n in range(count):
        delay = began + n / per_second - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield n


def _stale_bench_claim(claim: str) -> bool:
    """A claim left by a benchmark run that is gone (killed before its clean-up)."""
    words = claim.split()
    if words[:1] != ["bench"] or not words[-1].isdigit():
        return False
    try:
        os.kill(int(words[-1]), 0)
    except ProcessLookupError:
        return True
    return False


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
