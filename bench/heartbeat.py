"""HTTP heartbeat throughput against `/health`, on the same gunicorn server in one run.

The Procfile's `web` line runs on a database of its own; 200 agents register through the
API; then `/health` (the floor: gunicorn, WSGI and routing, no database) and
`POST /api/v1/agents/{id}/heartbeat` (rotating over the agents, each with its own token)
are loaded with the same connections for the same time, in alternating rounds; the best
round of each counts. Goal: heartbeat/health >= 0.6 with no non-2xx response.

A third load shows what any /api/v1 request costs before its view does anything: an
unrouted path under /api/v1 with an agent's token (404), which still passes the rate
limiter (a Redis INCR), the token check and the error body. It is the ceiling of every
/api/v1 route on this stack, and is printed beside the others (its 404s are expected).

The headline uses the gunicorn setting in effect (gunicorn.conf.py, which reads
WEB_CONCURRENCY and WEB_THREADS) with the heartbeat statement prepared once per database
connection. The same setting follows with the statement sent whole each time
(DATABASE_PREPARED_STATEMENTS=false, what a process does behind a pooler), and then
through a PgBouncer in transaction mode (tests/support/pgbouncer.py: at most 10 server
connections; the web process finds the pooler and does not prepare); then the settings
of BENCH_WEB_SWEEP, prepared, for comparison.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import text

from bench.common import Result, benchmark_database
from bench.stack import web_server
from shared.config import Settings
from shared.enums import AgentType, Capability
from tests.support.pgbouncer import running_pgbouncer

AGENTS = 200
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP_SECONDS = 2
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
# Other gunicorn settings tried after the headline, as WORKERSxTHREADS.
SWEEP = os.environ.get("BENCH_WEB_SWEEP", "1x16,2x8,3x8,4x4")
# How the heartbeat statement reaches PostgreSQL, after the headline (prepared): sent
# whole on a direct connection, and through PgBouncer (empty: neither).
STATEMENTS = os.environ.get("BENCH_HEARTBEAT_STATEMENTS", "plain,pgbouncer")
STATEMENT_CALLS, STATEMENT_BLOCKS = 2000, 4
GOAL_RATIO = 0.6
WRK_SCRIPT = Path(__file__).with_name("requests.lua")


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def describe(self) -> str:
        return (
            f"{self.per_second:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"{self.non_2xx} non-2xx, {self.errors} socket errors"
        )


@dataclass(frozen=True)
class Comparison:
    """The best round of each load on one gunicorn setting, and the failures of all."""

    web: str
    statement: str  # prepared, plain or pgbouncer
    health: Load
    api_floor: Load
    heartbeat: Load
    failed_requests: int

    @property
    def ratio(self) -> float:
        return self.heartbeat.per_second / self.health.per_second


def run() -> list[Result]:
    use_wrk = wrk_available()
    load = wrk_load if use_wrk else python_load
    print(
        f"  load: {'wrk' if use_wrk else 'Python'}, {CONNECTIONS} connections, "
        f"{ROUNDS} rounds of {SECONDS} s each for /health and heartbeat"
    )
    sweep = [tuple(map(int, s.split("x"))) for s in SWEEP.split(",") if s]
    statements = [s.strip() for s in STATEMENTS.split(",") if s.strip()]
    runs = [(None, "prepared"), *((None, s) for s in statements)]
    runs += [(web_setting, "prepared") for web_setting in sweep]
    comparisons: list[Comparison] = []
    with benchmark_database("heartbeat") as settings, tempfile.TemporaryDirectory() as tmp:
        health_file = write_requests(Path(tmp, "health"), [("GET", "/health", "", "")])
        heartbeat_file, api_floor_file = Path(tmp, "heartbeat"), Path(tmp, "api-floor")
        for web_setting, statement in runs:
            with serving(settings, web_setting, statement) as server:
                base_url, label = server.url, server.label
                if not heartbeat_file.exists():
                    agents = register_agents(base_url)
                    write_requests(heartbeat_file, heartbeat_requests(agents))
                    write_requests(api_floor_file, api_floor_requests(agents))
                load(base_url, heartbeat_file, WARMUP_SECONDS)
                rounds = [
                    (
                        load(base_url, health_file, SECONDS),
                        load(base_url, api_floor_file, SECONDS),
                        load(base_url, heartbeat_file, SECONDS),
                    )
                    for _ in range(ROUNDS)
                ]
            healths, api_floors, heartbeats = zip(*rounds, strict=True)
            failed = sum(load.non_2xx + load.errors for load in healths + heartbeats)
            comparison = Comparison(
                label,
                statement,
                fastest(healths),
                fastest(api_floors),
                fastest(heartbeats),
                failed,
            )
            comparisons.append(comparison)
            print(
                f"  web {label}, heartbeat statement {statement}, best rounds:\n"
                f"    /health   {comparison.health.describe()}"
            )
            print(f"    /api/v1 floor (404) {comparison.api_floor.describe()}")
            print(f"    heartbeat {comparison.heartbeat.describe()}")
        costs = statement_costs(settings) if statements else {}
    print_sweep(comparisons)
    headline = comparisons[0]
    return [
        *(statement_result(headline, c, costs) for c in comparisons[1 : 1 + len(statements)]),
        Result(
            benchmark=f"heartbeat (web {headline.web})",
            measured=f"{headline.heartbeat.per_second:,.0f} heartbeats/s, "
            f"p50 {headline.heartbeat.p50_ms:.1f} ms, p99 {headline.heartbeat.p99_ms:.1f} ms",
            floor=f"/health {headline.health.per_second:,.0f} req/s; any /api/v1 request "
            f"(404, no work) {headline.api_floor.per_second:,.0f} req/s",
            goal=f"heartbeat/health >= {GOAL_RATIO}: {headline.ratio:.2f}; "
            f"non-2xx + socket errors = 0: {headline.failed_requests}",
            met=headline.ratio >= GOAL_RATIO and headline.failed_requests == 0,
        ),
    ]


@contextmanager
def serving(settings: Settings, web_setting, statement: str):
    """The web server, its heartbeat statement prepared, plain, or behind PgBouncer."""
    if statement == "pgbouncer":
        with running_pgbouncer(settings.database_url) as bouncer:
            pooled = settings.with_overrides(
                database_url=bouncer.url(), database_listen_url=settings.database_url
            )
            with web_server(pooled, web_setting) as server:
                yield server
    else:
        prepared = "true" if statement == "prepared" else "false"
        with web_server(settings, web_setting, DATABASE_PREPARED_STATEMENTS=prepared) as server:
            yield server


def statement_costs(settings: Settings) -> dict[str, float]:
    """The statement alone, without HTTP: the median of STATEMENT_CALLS transactions of
    one heartbeat each (the commonest batch) on one connection: prepared, plain, and
    plain through a PgBouncer in transaction mode, in turns; milliseconds a transaction."""
    from shared.db import Database
    from shared.services import agents as agents_service

    timings: dict[str, list[float]] = {"prepared": [], "plain": [], "pgbouncer": []}
    with running_pgbouncer(settings.database_url) as bouncer:
        databases = {
            "prepared": Database(settings.with_overrides(database_prepared_statements="true")),
            "plain": Database(settings.with_overrides(database_prepared_statements="false")),
            "pgbouncer": Database(settings.with_overrides(database_url=bouncer.url())),
        }
        try:
            with databases["plain"].transaction() as db:
                ids = [row[0] for row in db.execute(text("SELECT id FROM agents LIMIT 100"))]
            for _ in range(STATEMENT_BLOCKS):
                for mode, database in databases.items():
                    for n in range(STATEMENT_CALLS // STATEMENT_BLOCKS):
                        began = time.perf_counter()
                        with database.transaction() as db:
                            agents_service.heartbeat_many(db, [(ids[n % len(ids)], n % 50)])
                        timings[mode].append((time.perf_counter() - began) * 1000)
        finally:
            for database in databases.values():
                database.dispose()
    costs = {mode: statistics.median(values) for mode, values in timings.items()}
    print(
        f"  the statement alone, one heartbeat a transaction, median of {STATEMENT_CALLS}: "
        + ", ".join(f"{mode} {ms:.2f} ms" for mode, ms in costs.items())
    )
    return costs


def statement_result(headline: Comparison, other: Comparison, costs: dict) -> Result:
    """The heartbeat statement sent another way, against the headline's prepared one."""
    share = other.heartbeat.per_second / headline.heartbeat.per_second
    alone = (
        f"; the statement alone {costs[other.statement]:.2f} ms a transaction, "
        f"prepared {costs['prepared']:.2f}"
        if other.statement in costs
        else ""
    )
    return Result(
        benchmark=f"heartbeat, statement {other.statement} (web {other.web})",
        measured=f"{other.heartbeat.per_second:,.0f} heartbeats/s "
        f"({share:.0%} of prepared), p50 {other.heartbeat.p50_ms:.1f} ms, "
        f"p99 {other.heartbeat.p99_ms:.1f} ms{alone}",
        floor=f"/health {other.health.per_second:,.0f} req/s; prepared "
        f"{headline.heartbeat.per_second:,.0f} heartbeats/s",
        goal=f"heartbeat/health >= {GOAL_RATIO}: {other.ratio:.2f}; "
        f"non-2xx + socket errors = 0: {other.failed_requests}",
        met=other.ratio >= GOAL_RATIO and other.failed_requests == 0,
    )


def fastest(loads: tuple[Load, ...]) -> Load:
    return max(loads, key=lambda load: load.per_second)


def print_sweep(comparisons: list[Comparison]) -> None:
    print(
        "\n| web (workers x threads) | statement | /health req/s | /api/v1 404 req/s "
        "| heartbeats/s | ratio | heartbeat p50 / p99 ms | failed requests |"
        "\n|---|---|--:|--:|--:|--:|--:|--:|"
    )
    for c in comparisons:
        print(
            f"| {c.web} | {c.statement} | {c.health.per_second:,.0f} "
            f"| {c.api_floor.per_second:,.0f} "
            f"| {c.heartbeat.per_second:,.0f} "
            f"| {c.ratio:.2f} | {c.heartbeat.p50_ms:.0f} / {c.heartbeat.p99_ms:.0f} "
            f"| {c.failed_requests} |"
        )
    best = max(comparisons, key=lambda c: c.heartbeat.per_second)
    print(f"\n  most heartbeats/s: web {best.web}, statement {best.statement}")


# --- the requests -----------------------------------------------------------------------


def register_agents(base_url: str) -> list[tuple[str, str]]:
    """Their ids and tokens (empty when the API hands out none)."""
    types, capabilities = list(AgentType), list(Capability)
    with requests.Session() as http:
        agents = []
        for n in range(AGENTS):
            body = {
                "name": f"bench-agent-{n}",
                "type": types[n % len(types)],
                "capabilities": [capabilities[n % len(capabilities)]],
                "max_concurrent_tasks": 10,
            }
            response = http.post(f"{base_url}/api/v1/agents/register", json=body, timeout=10)
            response.raise_for_status()
            registered = response.json()
            agents.append((registered["id"], registered.get("token", "")))
    return agents


def heartbeat_requests(agents: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """One heartbeat an agent, with its token; loads stay below 100 so none turns BUSY."""
    return [
        ("POST", f"/api/v1/agents/{agent_id}/heartbeat", token, f'{{"current_load": {n % 100}}}')
        for n, (agent_id, token) in enumerate(agents)
    ]


def api_floor_requests(agents: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """A path under /api/v1 that no route serves, with each agent's token."""
    return [
        ("GET", f"/api/v1/agents/{agent_id}/no-such-route", token, "") for agent_id, token in agents
    ]


def write_requests(path: Path, requests_: list[tuple[str, str, str, str]]) -> Path:
    """One request a line: method, path, bearer token, body, separated by tabs."""
    path.write_text("".join("\t".join(request) + "\n" for request in requests_))
    return path


# --- the load generators ----------------------------------------------------------------


def wrk_available() -> bool:
    """wrk, installed with apt-get when missing and possible (BENCH_LOADER=python skips)."""
    if os.environ.get("BENCH_LOADER") == "python":
        return False
    if not shutil.which("wrk") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk with apt-get ...")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, **quiet)
            subprocess.run(install, env=env, **quiet)
    if shutil.which("wrk"):
        return True
    print("wrk is not available: falling back to the Python load generator")
    return False


def wrk_load(base_url: str, request_file: Path, seconds: int) -> Load:
    """One wrk thread; the Lua script rotates over the requests and counts non-2xx."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), base_url, "--", str(request_file)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return Load(**json.loads(output.strip().splitlines()[-1]))


def python_load(base_url: str, request_file: Path, seconds: int) -> Load:
    """Processes of threads, one keep-alive connection a thread. It needs more CPU than
    wrk, which leaves less to the server: its figures are lower."""
    lines = [line.split("\t") for line in request_file.read_text().splitlines()]
    processes = min(CONNECTIONS, 2 * (os.cpu_count() or 1))
    shares = [CONNECTIONS // processes + (n < CONNECTIONS % processes) for n in range(processes)]
    with multiprocessing.Pool(processes) as pool:
        parts = pool.starmap(
            _drive_connections,
            [(base_url, lines, share, seconds, n * share) for n, share in enumerate(shares)],
        )
    latencies = sorted(ms for part in parts for ms in part[0])
    percentiles = statistics.quantiles(latencies, n=100)
    return Load(
        requests=len(latencies),
        seconds=max(part[3] for part in parts),
        p50_ms=percentiles[49],
        p99_ms=percentiles[98],
        non_2xx=sum(part[1] for part in parts),
        errors=sum(part[2] for part in parts),
    )


def _drive_connections(base_url: str, lines: list, connections: int, seconds: int, first: int):
    address = urlsplit(base_url)
    deadline = time.monotonic() + seconds
    outcomes: list[tuple[list[float], int, int]] = []

    def client(start: int) -> None:
        latencies, non_2xx, errors = [], 0, 0
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        index = start
        while time.monotonic() < deadline:
            method, path, token, body = lines[index % len(lines)]
            index += 1
            headers = {"Content-Type": "application/json"} if body else {}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            began = time.perf_counter()
            try:
                connection.request(method, path, body or None, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            latencies.append((time.perf_counter() - began) * 1000)
            non_2xx += not 200 <= response.status < 300
        connection.close()
        outcomes.append((latencies, non_2xx, errors))

    began = time.perf_counter()
    clients = [threading.Thread(target=client, args=(first + n,)) for n in range(connections)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    elapsed = time.perf_counter() - began
    return (
        [ms for outcome in outcomes for ms in outcome[0]],
        sum(outcome[1] for outcome in outcomes),
        sum(outcome[2] for outcome in outcomes),
        elapsed,
    )
