"""The ordinary routes beside a bare Flask app, in one run (issue 18).

Two servers run side by side on the benchmark's database: the Procfile's `web` (the
project's gunicorn.conf.py, RATE_LIMIT so high that the limiter counts every request but
refuses none) and bench/bare_app.py (Flask + SQLAlchemy + psycopg2 under gunicorn
gthread with the same workers and threads, a table of its own). Each route is loaded
with wrk (the same connections for the same time) in alternating rounds; the median
round counts. The floors:

- `/health` beside the bare app's hello route;
- `GET /api/v1/sessions/{id}` beside a row by primary key;
- `GET /api/v1/sessions?page_size=20` and `GET /api/v1/tasks?session_id=..&page_size=20`
  (a session of 40 tasks that depend on each other and have subtasks) beside a page of 20;
- `POST /api/v1/sessions` and `POST /api/v1/tasks` beside an INSERT + COMMIT;
- `POST /api/v1/agents/{id}/heartbeat` beside an unrouted /api/v1 path with the agent's
  token (the limiter, the token check and an error body: the ceiling of any /api/v1 route).

A task's `start` + `complete` pair is driven by threads (one task after another, each
assigned beforehand) and reported as pairs/s. Then sequential latency: one connection,
one request after another, on the otherwise idle stack.

Goals: each of GET one, GET a page of 20, POST a session, POST a task >= 0.5 of its bare
route; POST /sessions >= 290/s (10x Prefect's create measured on this box, 29/s);
heartbeat >= 0.7 of the unrouted path with 0 failed requests; sequential p50 of
GET /sessions/{id} <= 3 ms and of POST /sessions <= 5 ms.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import create_engine, text

from bench.bare_app import CREATE_TABLE, TABLE
from bench.common import ROOT, Result, benchmark_database
from bench.heartbeat import (
    Load,
    api_floor_requests,
    heartbeat_requests,
    python_load,
    write_requests,
    wrk_available,
    wrk_load,
)
from bench.stack import Server, wait_until_ready, web_server
from shared.config import Settings
from tests.support.processes import free_port, output, stop

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP_SECONDS = 1
SEQUENTIAL_REQUESTS = int(os.environ.get("BENCH_SEQUENTIAL", "300"))
PAIR_TASKS = int(os.environ.get("BENCH_PAIRS", "300"))
PAIR_THREADS = 16
SESSIONS = 200
AGENTS = 40
PAGE_TASKS = 40

GOAL_RATIO = 0.5
GOAL_HEARTBEAT_RATIO = 0.7
GOAL_CREATES_PER_SECOND = 290  # 10x Prefect's create on this box (29/s)
GOAL_GET_P50_MS = 3.0
GOAL_POST_P50_MS = 5.0

# (name, server, floor's name or None): the loads of a round, in order.
LOADS = [
    ("hello (bare)", "bare", None),
    ("/health", "project", "hello (bare)"),
    ("row by id (bare)", "bare", None),
    ("GET /sessions/{id}", "project", "row by id (bare)"),
    ("page of 20 (bare)", "bare", None),
    ("GET /sessions?page_size=20", "project", "page of 20 (bare)"),
    ("GET /tasks?session_id&page_size=20", "project", "page of 20 (bare)"),
    ("insert + commit (bare)", "bare", None),
    ("POST /sessions", "project", "insert + commit (bare)"),
    ("POST /tasks", "project", "insert + commit (bare)"),
    ("/api/v1 unrouted (404, agent token)", "project", None),
    ("POST /agents/{id}/heartbeat", "project", "/api/v1 unrouted (404, agent token)"),
]
GOAL_ROUTES = {
    "GET /sessions/{id}": GOAL_RATIO,
    "GET /sessions?page_size=20": GOAL_RATIO,
    "GET /tasks?session_id&page_size=20": GOAL_RATIO,
    "POST /sessions": GOAL_RATIO,
    "POST /tasks": GOAL_RATIO,
    "POST /agents/{id}/heartbeat": GOAL_HEARTBEAT_RATIO,
}
# Routes whose answers are errors on purpose.
EXPECTED_ERRORS = {"/api/v1 unrouted (404, agent token)"}


@dataclass(frozen=True)
class Sequential:
    name: str
    p50_ms: float
    p99_ms: float


def run() -> list[Result]:
    use_wrk = wrk_available()
    load = wrk_load if use_wrk else python_load
    print(
        f"  load: {'wrk' if use_wrk else 'Python'}, {ROUNDS} rounds of {SECONDS} s per route, "
        "median round; both servers up for the whole run"
    )
    with (
        benchmark_database("request_path") as settings,
        tempfile.TemporaryDirectory() as tmp,
        web_server(settings) as project,
        bare_server(settings, project.label) as bare,
    ):
        print(f"  web {project.label}; bare app gunicorn gthread {bare.label}")
        files = prepare(settings, project, bare, Path(tmp))
        urls = {"project": project.url, "bare": bare.url}
        for name, server, _floor in LOADS:
            load(urls[server], files[name], WARMUP_SECONDS)
        rounds: dict[str, list[Load]] = {name: [] for name, _, _ in LOADS}
        pair_rounds: list[tuple[float, float]] = []
        for _ in range(ROUNDS):
            for name, server, _floor in LOADS:
                rounds[name].append(load(urls[server], files[name], SECONDS))
            pair_rounds.append(start_complete_pairs(project.url, files["pairs"]))
        sequential = sequential_latencies(project.url, bare.url, files)
    medians = {name: median_load(loads) for name, loads in rounds.items()}
    failed = {
        name: sum(load.non_2xx + load.errors for load in loads)
        for name, loads in rounds.items()
        if name not in EXPECTED_ERRORS
    }
    pairs = sorted(pair_rounds)[len(pair_rounds) // 2]
    print_tables(medians, failed, pairs, sequential)
    return results(medians, failed, sequential)


# --- the servers and their data --------------------------------------------------------


@contextmanager
def bare_server(settings: Settings, label: str) -> Iterator[Server]:
    workers = label.split("x")[0]
    threads = os.environ.get("WEB_THREADS", str(settings.web_threads))
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(CREATE_TABLE)
    engine.dispose()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bare-app-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "bench.bare_app:app",
            "--config",  # not the project's gunicorn.conf.py, read by default from cwd
            "/dev/null",
            "--worker-class",
            "gthread",
            "--workers",
            workers,
            "--threads",  # the project's threads beyond WEB_THREADS are for WebSockets
            threads,
            "--keep-alive",
            "5",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": settings.sqlalchemy_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    process.log_path = log.name
    server = Server(f"http://127.0.0.1:{port}", f"{workers}x{threads}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{server.url}/hello", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bare app did not start:\n{output(process)}") from None
                time.sleep(0.2)
        yield server
    finally:
        stop(process, timeout=15)


def prepare(settings: Settings, project: Server, bare: Server, tmp: Path) -> dict[str, Path]:
    """The data both servers read, and the request file of every load."""
    wait_until_ready(project)
    base = project.url
    http = requests.Session()

    def post(path: str, body: dict, token: str = "") -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = http.post(f"{base}{path}", json=body, headers=headers, timeout=10)
        if not response.ok:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
        return response.json()

    session_ids = [post("/api/v1/sessions", {"title": f"bench {n}"})["id"] for n in range(SESSIONS)]
    page_session = session_ids[0]
    previous: list[str] = []
    for n in range(PAGE_TASKS):
        body = {"session_id": page_session, "title": f"page task {n}"}
        if previous and n % 5 == 0:
            body["parent_id"] = previous[0]  # a task with no dependencies (not BLOCKED)
        elif previous and n % 3:
            body["depends_on"] = previous[-2:]
        previous.append(post("/api/v1/tasks", body)["id"])
    agents = []
    for n in range(AGENTS):
        body = {
            "name": f"bench-agent-{n}",
            "type": "BACKEND",
            "capabilities": ["CODE_GENERATION"],
            "max_concurrent_tasks": 100,
        }
        registered = post("/api/v1/agents/register", body)
        agents.append((registered["id"], registered.get("token", "")))
    sink_session = session_ids[1]
    pair_session = session_ids[2]
    post(f"/api/v1/sessions/{pair_session}/start", {})
    http.close()

    bare_ids = seed_bare_rows(settings)
    files = {
        "hello (bare)": [("GET", "/hello", "", "")],
        "/health": [("GET", "/health", "", "")],
        "row by id (bare)": [("GET", f"/items/{i}", "", "") for i in bare_ids],
        "GET /sessions/{id}": [("GET", f"/api/v1/sessions/{i}", "", "") for i in session_ids],
        "page of 20 (bare)": [("GET", "/items?limit=20", "", "")],
        "GET /sessions?page_size=20": [("GET", "/api/v1/sessions?page_size=20", "", "")],
        "GET /tasks?session_id&page_size=20": [
            ("GET", f"/api/v1/tasks?session_id={page_session}&page_size=20", "", "")
        ],
        "insert + commit (bare)": [("POST", "/items", "", '{"title": "bench"}')],
        "POST /sessions": [("POST", "/api/v1/sessions", "", '{"title": "bench"}')],
        "POST /tasks": [
            ("POST", "/api/v1/tasks", "", json.dumps({"session_id": sink_session, "title": "b"}))
        ],
        "/api/v1 unrouted (404, agent token)": api_floor_requests(agents),
        "POST /agents/{id}/heartbeat": heartbeat_requests(agents),
    }
    paths = {
        name: write_requests(tmp / f"load{n}", lines)
        for n, (name, lines) in enumerate(files.items())
    }
    paths["pairs"] = tmp / "pairs.json"
    paths["pairs"].write_text(json.dumps({"session": pair_session, "agents": agents}))
    return paths


def seed_bare_rows(settings: Settings) -> list[str]:
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as connection:
        ids = connection.execute(
            text(
                f"INSERT INTO {TABLE} (id, title) SELECT gen_random_uuid(), 'bench ' || n "
                f"FROM generate_series(1, {SESSIONS}) AS n RETURNING id"
            )
        ).scalars()
        ids = [str(i) for i in ids]
    engine.dispose()
    return ids


# --- start + complete pairs -------------------------------------------------------------


def start_complete_pairs(base_url: str, pairs_file: Path) -> tuple[float, float]:
    """Pairs/s and the median pair in ms: PAIR_TASKS tasks, each assigned to an agent
    beforehand, started and completed by PAIR_THREADS threads with the agent's token."""
    plan = json.loads(pairs_file.read_text())
    agents = plan["agents"]
    work: list[tuple[str, str]] = []
    with requests.Session() as api:
        for n in range(PAIR_TASKS):
            agent_id, token = agents[n % len(agents)]
            task = api.post(
                f"{base_url}/api/v1/tasks",
                json={"session_id": plan["session"], "title": f"pair {n}"},
                timeout=10,
            ).json()
            assigned = api.post(
                f"{base_url}/api/v1/tasks/{task['id']}/assign",
                json={"agent_id": agent_id},
                timeout=10,
            )
            if assigned.status_code == 200:  # else a sweep-less race: skip it
                work.append((task["id"], token))
    lock = threading.Lock()
    durations: list[float] = []
    failures: list[str] = []
    address = urlsplit(base_url)

    def drive() -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        while True:
            with lock:
                if not work:
                    break
                task_id, token = work.pop()
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            began = time.perf_counter()
            for action in ("start", "complete"):
                connection.request("POST", f"/api/v1/tasks/{task_id}/{action}", "{}", headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    with lock:
                        failures.append(f"{action} {response.status}")
            with lock:
                durations.append((time.perf_counter() - began) * 1000)
        connection.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=drive) for _ in range(PAIR_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures or not durations:
        raise RuntimeError(f"start/complete failed: {failures[:5]}")
    return len(durations) / elapsed, statistics.median(durations)


# --- sequential latency -----------------------------------------------------------------


def sequential_latencies(project_url: str, bare_url: str, files: dict[str, Path]) -> list:
    plan = [
        ("hello (bare)", bare_url),
        ("row by id (bare)", bare_url),
        ("insert + commit (bare)", bare_url),
        ("/health", project_url),
        ("/api/v1 unrouted (404, agent token)", project_url),
        ("GET /sessions/{id}", project_url),
        ("POST /sessions", project_url),
        ("POST /agents/{id}/heartbeat", project_url),
    ]
    return [sequential(name, url, files[name]) for name, url in plan]


def sequential(name: str, base_url: str, request_file: Path) -> Sequential:
    lines = [line.split("\t") for line in request_file.read_text().splitlines()]
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    latencies = []
    for n in range(SEQUENTIAL_REQUESTS + 20):
        method, path, token, body = lines[n % len(lines)]
        headers = {"Content-Type": "application/json"} if body else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        began = time.perf_counter()
        connection.request(method, path, body or None, headers)
        connection.getresponse().read()
        if n >= 20:  # the first ones warm the connection and the caches
            latencies.append((time.perf_counter() - began) * 1000)
    connection.close()
    cuts = statistics.quantiles(latencies, n=100)
    return Sequential(name, cuts[49], cuts[98])


# --- the report -------------------------------------------------------------------------


def median_load(loads: list[Load]) -> Load:
    return sorted(loads, key=lambda load: load.per_second)[len(loads) // 2]


def ratio(medians: dict[str, Load], name: str) -> float | None:
    floor = next(f for n, _, f in LOADS if n == name)
    if floor is None:
        return None
    return medians[name].per_second / medians[floor].per_second


def print_tables(medians, failed, pairs, sequential_) -> None:
    print("\n| route | req/s | p50 / p99 ms | floor | ratio | goal | failed |")
    print("|---|--:|--:|---|--:|--:|--:|")
    for name, _server, floor in LOADS:
        load = medians[name]
        r = ratio(medians, name)
        goal = GOAL_ROUTES.get(name)
        print(
            f"| {name} | {load.per_second:,.0f} | {load.p50_ms:.1f} / {load.p99_ms:.1f} "
            f"| {floor or '-'} | {'-' if r is None else f'{r:.2f}'} "
            f"| {'-' if goal is None else f'>= {goal}'} | {failed.get(name, '-')} |"
        )
    print(
        f"\n  task start + complete: {pairs[0]:,.0f} pairs/s, median pair {pairs[1]:.1f} ms "
        f"({PAIR_THREADS} threads)"
    )
    print("\n| sequential, one connection | p50 ms | p99 ms |\n|---|--:|--:|")
    for s in sequential_:
        print(f"| {s.name} | {s.p50_ms:.2f} | {s.p99_ms:.2f} |")


def results(medians, failed, sequential_) -> list[Result]:
    out = []
    for name, goal in GOAL_ROUTES.items():
        floor = next(f for n, _, f in LOADS if n == name)
        r = ratio(medians, name)
        out.append(
            Result(
                benchmark=f"request_path {name}",
                measured=f"{medians[name].per_second:,.0f} req/s",
                floor=f"{floor} {medians[floor].per_second:,.0f} req/s",
                goal=f"ratio >= {goal}: {r:.2f}; failed = 0: {failed[name]}",
                met=r >= goal and failed[name] == 0,
            )
        )
    creates = medians["POST /sessions"].per_second
    out.append(
        Result(
            benchmark="request_path POST /sessions vs Prefect",
            measured=f"{creates:,.0f} creates/s",
            floor="Prefect's create on this box 29/s (anchor)",
            goal=f">= {GOAL_CREATES_PER_SECOND}/s",
            met=creates >= GOAL_CREATES_PER_SECOND,
        )
    )
    by_name = {s.name: s for s in sequential_}
    for name, goal in (
        ("GET /sessions/{id}", GOAL_GET_P50_MS),
        ("POST /sessions", GOAL_POST_P50_MS),
    ):
        s = by_name[name]
        out.append(
            Result(
                benchmark=f"request_path sequential {name}",
                measured=f"p50 {s.p50_ms:.2f} ms",
                floor=f"/health p50 {by_name['/health'].p50_ms:.2f} ms; bare row "
                f"{by_name['row by id (bare)'].p50_ms:.2f} ms",
                goal=f"p50 <= {goal} ms",
                met=s.p50_ms <= goal,
            )
        )
    return out
