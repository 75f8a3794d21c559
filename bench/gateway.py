"""Ten thousand WebSocket clients on one `gateway` process (gevent), on this machine.

The Procfile's `gateway` (GATEWAY_CONCURRENCY=1) runs beside a `web` (WEB_CONCURRENCY=1,
whose relay publishes the events; in production the web processes do). The clients are
asyncio processes (bench/gateway_clients.py, CLIENT_PROCESSES of them), each socket bound
to one of 100 loopback source addresses. Events are inserted straight into `outbox_events`
at a steady rate, one row a transaction, so a row's `created_at` (the event's `timestamp`)
is its commit time, and published to the Redis stream right after its commit by the
benchmark itself (`relay.publish_once`, as a relay woken by the commit would; the web
process's relay runs too, and takes its turn when it finds something); the gateway's hub
carries them to the sockets as in production. Latency is client receipt - that timestamp
(one clock): the gateway's, not the relay's wake-up (bench/websocket.py measures the path
with the web's relay).

(a) agents: CLIENTS agents (rows inserted at once), each client on its own
    `/ws/agents/{id}`; `task.assigned` events at 200/s, each naming one agent (round
    robin): p99 <= 100 ms, every event received once, by its agent and by no other.
(b) sessions: CLIENTS clients on `/ws/sessions`; `session.created` at 10/s, to every
    client: p99 <= 500 ms, every client every event, in order.
(c) idle, measured with the clients of (a) and of (b) connected before any event: the
    gateway worker's RSS growth per connection (<= 50 KB) and its CPU over IDLE_SECONDS
    (<= 5% of a core).
Heartbeats: with (a)'s sockets open, HEARTBEAT_AGENTS agents heartbeat as fast as they are
answered, over HTTP (`web`, the Procfile's gthread, one keep-alive connection each) and on
their streams (the gateway), in alternating rounds of HEARTBEAT_SECONDS; the best round
of each counts. Goal: stream >= 3x HTTP.
The floor: bare Redis XADD -> XREAD BLOCK latency to one subscriber (bench/websocket.py).
The machine's load average is printed with each figure: it is shared.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
import uuid
from array import array
from collections import Counter
from urllib.parse import urlsplit

import redis as redis_lib
from sqlalchemy import create_engine, text

from bench import gateway_clients
from bench.common import Result, benchmark_database, paced
from bench.stack import UNLIMITED_RATE, cpu_seconds, procfile_process, rss_bytes, web_server
from bench.websocket import redis_floor
from shared import relay
from shared.db import Database
from shared.enums import AgentType
from shared.models import Agent
from tests.support.processes import free_port, output

REDIS_DB = 12
CLIENTS = int(os.environ.get("BENCH_GATEWAY_CLIENTS", "10000"))
CLIENT_PROCESSES = int(os.environ.get("BENCH_GATEWAY_CLIENT_PROCESSES", "3"))
SECONDS = int(os.environ.get("BENCH_GATEWAY_SECONDS", "10"))
PARTS = os.environ.get("BENCH_GATEWAY_PARTS", "ab")  # "a", "b" or both
GATEWAY_CONCURRENCY = int(os.environ.get("BENCH_GATEWAY_CONCURRENCY", "1"))
AGENT_RATE = int(os.environ.get("BENCH_GATEWAY_AGENT_RATE", "200"))
SESSION_RATE = int(os.environ.get("BENCH_GATEWAY_SESSION_RATE", "10"))
IDLE_SECONDS = 20
SETTLE_SECONDS = 3
SOURCES = [f"127.0.0.{n}" for n in range(2, 102)]
# As many agents each way, each heartbeating again as soon as it is answered: enough that
# both ways are at their capacity (HTTP: the worker's threads and CPU; the stream: one
# transaction a batch), not at one round trip's latency.
HEARTBEAT_AGENTS = 600
HEARTBEAT_SECONDS = 5
HEARTBEAT_ROUNDS = 2
GOAL_AGENTS_P99_MS = 100
GOAL_SESSIONS_P99_MS = 500
GOAL_KB = 50
GOAL_IDLE_CPU = 0.05
GOAL_HEARTBEAT_RATIO = 3

INSERT_SQL = text("INSERT INTO outbox_events (type, payload) VALUES (:type, :payload)")
PUBLISHED_SQL = text(
    "SELECT count(*) FILTER (WHERE seq IS NULL), coalesce(max(seq), 0) FROM outbox_events"
)


def run() -> list[Result]:
    with benchmark_database("gateway", REDIS_DB) as settings:
        floor = redis_floor(settings.redis_url)
        print(f"  floor (Redis XADD -> XREAD BLOCK): p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms")
        agent_ids = insert_agents(settings, CLIENTS)
        PUBLISHER.database = Database(settings)
        PUBLISHER.redis = redis_lib.Redis.from_url(settings.redis_url)
        engine = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
        env = {
            "WEB_CONCURRENCY": "1",
            "GATEWAY_CONCURRENCY": str(GATEWAY_CONCURRENCY),
            "GATEWAY_MAX_CONNECTIONS": str(CLIENTS + 1000),
            "WS_MAX_CONNECTIONS_PER_CLIENT": str(CLIENTS // len(SOURCES) + 100),
            "RATE_LIMIT": UNLIMITED_RATE,
        }
        try:
            with web_server(settings, **env) as web:
                # a fresh gateway for each: memory freed by the first clients would be reused
                if "a" in PARTS:
                    with gateway_server(settings, **env) as gateway:
                        agents = measure_agents(engine, web, gateway, agent_ids)
                if "b" in PARTS:
                    with gateway_server(settings, **env) as gateway:
                        sessions = measure_sessions(engine, gateway)
        finally:
            engine.dispose()
            PUBLISHER.database.engine.dispose()
            PUBLISHER.redis.close()
    if PARTS != "ab":
        return []  # a part alone: its figures are printed above
    return results(agents, sessions, floor)


class PUBLISHER:  # noqa: N801  (set by run)
    database: Database
    redis: redis_lib.Redis


def insert_agents(settings, count: int) -> list[str]:
    database = Database(settings)
    ids = [uuid.uuid4() for _ in range(count)]
    with database.transaction() as session:
        session.add_all(
            Agent(
                id=agent_id, name=f"bench-{agent_id}", type=AgentType.QA, capabilities=["TESTING"]
            )
            for agent_id in ids
        )
    database.engine.dispose()
    return [str(agent_id) for agent_id in ids]


class gateway_server:  # noqa: N801  (a context manager, used like web_server)
    def __init__(self, settings, **env):
        self.port = free_port()
        self.manager = procfile_process("gateway", settings, GATEWAY_PORT=str(self.port), **env)

    def __enter__(self):
        self.process = self.manager.__enter__()
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        import urllib.request

        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        # every worker (GATEWAY_CONCURRENCY of them) once all have started
        while len(self.pids) < GATEWAY_CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.2)
        return self

    @property
    def pids(self) -> list[int]:
        pid = self.process.pid
        return [int(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split()]

    def __exit__(self, *exc):
        return self.manager.__exit__(*exc)


class Clients:
    """CLIENT_PROCESSES asyncio processes holding the sockets."""

    def __init__(self, url: str, paths: list[str], agents: list) -> None:
        context = multiprocessing.get_context("spawn")
        port = urlsplit(url).port
        self.pipes, self.processes = [], []
        sources = [SOURCES[n % len(SOURCES)] for n in range(len(paths))]
        for k in range(CLIENT_PROCESSES):
            pipe, child = context.Pipe()
            process = context.Process(
                target=gateway_clients.run_clients,
                args=(
                    "127.0.0.1",
                    port,
                    paths[k::CLIENT_PROCESSES],
                    agents[k::CLIENT_PROCESSES],
                    sources[k::CLIENT_PROCESSES],
                    child,
                ),
                daemon=True,
            )
            process.start()
            self.pipes.append(pipe)
            self.processes.append(process)
        answers = self.gather(timeout=600)
        self.connected = sum(n for _, n, _ in answers)
        self.errors = [e for _, _, errors in answers for e in errors]

    def gather(self, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        answers = []
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            while not pipe.poll(0.5):
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("a client process did not answer")
            answers.append(pipe.recv())
        return answers

    def ask(self, command: tuple, timeout: float = 300) -> list:
        for pipe in self.pipes:
            pipe.send(command)
        return self.gather(timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("close",))
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def idle_figures(gateway, before_rss: int, connected: int) -> dict:
    """Once the gateway has set up the last sockets (its CPU falls below a tenth of a
    core for a second, or a minute passed): RSS growth per socket, and CPU while idle."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cpu = cpu_seconds(gateway.pids)
        time.sleep(1)
        if cpu_seconds(gateway.pids) - cpu < 0.1:
            break
    time.sleep(SETTLE_SECONDS)
    rss = rss_bytes(gateway.pids)
    cpu = cpu_seconds(gateway.pids)
    time.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_seconds(gateway.pids) - cpu) / IDLE_SECONDS
    kb = (rss - before_rss) / 1024 / max(connected, 1)
    print(
        f"    idle with {connected} sockets: {kb:.1f} KB a connection (RSS {before_rss / 2**20:.0f}"
        f" -> {rss / 2**20:.0f} MB), gateway CPU {idle_cpu:.1%} of a core; {load()}"
    )
    return {"kb": kb, "idle_cpu": idle_cpu, "load": load()}


def measure_agents(engine, web, gateway, agent_ids: list[str]) -> dict:
    print(f"  (a) {CLIENTS} clients on /ws/agents/{{id}}, task.assigned at {AGENT_RATE}/s")
    before_rss = rss_bytes(gateway.pids)
    paths = [f"/ws/agents/{agent_id}" for agent_id in agent_ids]
    clients = Clients(gateway.url, paths, agent_ids)
    try:
        print(
            f"    connected {clients.connected} of {CLIENTS}"
            + (f"; {clients.errors}" if clients.errors else "")
        )
        idle = idle_figures(gateway, before_rss, clients.connected)
        count = AGENT_RATE * SECONDS
        cpu = cpu_seconds(gateway.pids)
        first, last = produce(
            engine,
            count,
            AGENT_RATE,
            lambda n: (
                "task.assigned",
                {
                    "agent_id": agent_ids[n % len(agent_ids)],
                    "task_id": str(uuid.uuid4()),
                    "session_id": str(uuid.uuid4()),
                    "status": "ASSIGNED",
                    "pool": "default",
                },
            ),
        )
        answers = clients.ask(("expect", first, last))
        gateway_cpu = cpu_seconds(gateway.pids) - cpu
        summary = merge(answers)
        counts = summary["counts"]
        summary.update(
            idle,
            events=last - first + 1,
            connected=clients.connected,
            once=sum(counts.get(seq) == 1 for seq in range(first, last + 1)),
            gateway_cpu=gateway_cpu,
            load_events=load(),
        )
        print(
            f"    {summary['events']} events: received once {summary['once']}, by another agent "
            f"{summary['strangers']}, closed by the server {summary['closed_by_server']}; latency "
            f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, max "
            f"{summary['max_ms']:.1f} ms; gateway CPU {gateway_cpu:.1f} s; {summary['load_events']}"
        )
        http_agents = agent_ids[-(HEARTBEAT_AGENTS // CLIENT_PROCESSES) * CLIENT_PROCESSES :]
        report_closes(summary, gateway)
        summary["heartbeats"] = measure_heartbeats(web, clients, http_agents)
    finally:
        clients.close()
    return summary


def report_closes(summary: dict, gateway) -> None:
    """Why sockets were closed, if any were: the close codes, the gateway's warnings."""
    if not summary["closed_by_server"]:
        return
    print(f"    close codes: {dict(summary['close_codes'])}")
    with open("/tmp/orchestrator-bench-gateway.log", "w") as copy:
        copy.write(output(gateway.process))
    lines = [
        line
        for line in output(gateway.process).splitlines()
        if '"WARNING"' in line or '"ERROR"' in line
    ]
    for line in lines[-5:]:
        print(f"    gateway: {line[:300]}")


def measure_heartbeats(web, clients: Clients, http_agents: list[str]) -> dict:
    """HEARTBEAT_AGENTS of the clients' sockets heartbeat on their streams (the gateway);
    as many other agents over HTTP (`web`), in alternating rounds."""
    per_process = HEARTBEAT_AGENTS // CLIENT_PROCESSES
    context = multiprocessing.get_context("spawn")
    best = {"stream": 0.0, "http": 0.0}
    for _ in range(HEARTBEAT_ROUNDS):
        acked = sum(clients.ask(("heartbeats", HEARTBEAT_SECONDS, per_process), timeout=60))
        best["stream"] = max(best["stream"], acked / HEARTBEAT_SECONDS)
        pipe, child = context.Pipe()
        process = context.Process(
            target=gateway_clients.run_http_heartbeats,
            args=("127.0.0.1", urlsplit(web.url).port, http_agents, HEARTBEAT_SECONDS, child),
            daemon=True,
        )
        process.start()
        answered = pipe.recv()
        process.join()
        best["http"] = max(best["http"], answered / HEARTBEAT_SECONDS)
    print(
        f"    heartbeats, {per_process * CLIENT_PROCESSES} agents on their streams (gateway): "
        f"{best['stream']:,.0f}/s; {len(http_agents)} agents over HTTP (web, "
        f"{web.label}): {best['http']:,.0f}/s: x{best['stream'] / max(best['http'], 1):.1f}; "
        f"{load()}"
    )
    return best


def measure_sessions(engine, gateway) -> dict:
    print(f"  (b) {CLIENTS} clients on /ws/sessions, session.created at {SESSION_RATE}/s")
    before_rss = rss_bytes(gateway.pids)
    clients = Clients(gateway.url, ["/ws/sessions"] * CLIENTS, [None] * CLIENTS)
    try:
        print(
            f"    connected {clients.connected} of {CLIENTS}"
            + (f"; {clients.errors}" if clients.errors else "")
        )
        idle = idle_figures(gateway, before_rss, clients.connected)
        cpu = cpu_seconds(gateway.pids)
        first, last = produce(
            engine,
            SESSION_RATE * SECONDS,
            SESSION_RATE,
            lambda n: ("session.created", {"session_id": str(uuid.uuid4()), "status": "PENDING"}),
        )
        answers = clients.ask(("expect", first, last))
        gateway_cpu = cpu_seconds(gateway.pids) - cpu
        summary = merge(answers)
        summary.update(
            idle,
            events=last - first + 1,
            connected=clients.connected,
            gateway_cpu=gateway_cpu,
            load_events=load(),
        )
        print(
            f"    {summary['events']} events to {summary['clients']} clients: complete "
            f"{summary['complete']}, closed by the server {summary['closed_by_server']}; "
            f"latency p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, max "
            f"{summary['max_ms']:.1f} ms; gateway CPU {gateway_cpu:.1f} s, clients' CPU "
            f"{summary['client_cpu']:.1f} s; {summary['load_events']}"
        )
        report_closes(summary, gateway)
    finally:
        clients.close()
    return summary


def produce(engine, count: int, rate: float, event) -> tuple[int, int]:
    """`count` events at `rate` a second, each published at once; their first and last
    ids once all are published."""
    with engine.connect() as connection:
        _, before = connection.execute(PUBLISHED_SQL).one()
        for n in paced(count, rate):
            kind, payload = event(n)
            connection.execute(INSERT_SQL, {"type": kind, "payload": json.dumps(payload)})
            relay.publish_once(PUBLISHER.database, PUBLISHER.redis, retention=1_000_000)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            unpublished, last = connection.execute(PUBLISHED_SQL).one()
            if not unpublished:
                return before + 1, last
            time.sleep(0.05)
    raise RuntimeError(f"{unpublished} events still unpublished after 60 s")


def merge(answers: list[dict]) -> dict:
    latencies = array("d")
    counts: dict[int, int] = {}
    for answer in answers:
        latencies.extend(answer["latencies"])
        for seq, n in answer["counts"].items():
            counts[seq] = counts.get(seq, 0) + n
    ordered = sorted(latencies)
    quantiles = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else [float("nan")] * 99
    )
    complete = [a["complete"] for a in answers]
    return {
        "clients": sum(a["clients"] for a in answers),
        "messages": len(ordered),
        "p50_ms": quantiles[49],
        "p99_ms": quantiles[98],
        "max_ms": ordered[-1] if ordered else float("nan"),
        "counts": counts,
        "complete": None if None in complete else sum(complete),
        "strangers": sum(a["strangers"] for a in answers),
        "closed_by_server": sum(a["closed_by_server"] for a in answers),
        "close_codes": sum((Counter(a["close_codes"]) for a in answers), Counter()),
        "client_cpu": sum(a["client_cpu"] for a in answers),
    }


def results(agents: dict, sessions: dict, floor: tuple[float, float]) -> list[Result]:
    floor_text = f"Redis XADD -> XREAD p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms"
    agents_met = (
        agents["connected"] == CLIENTS
        and agents["once"] == agents["events"]
        and agents["strangers"] == 0
        and agents["p99_ms"] <= GOAL_AGENTS_P99_MS
    )
    sessions_met = (
        sessions["connected"] == CLIENTS
        and sessions["complete"] == CLIENTS
        and sessions["p99_ms"] <= GOAL_SESSIONS_P99_MS
    )
    worst_kb = max(agents["kb"], sessions["kb"])
    worst_cpu = max(agents["idle_cpu"], sessions["idle_cpu"])
    beats = agents["heartbeats"]
    ratio = beats["stream"] / max(beats["http"], 1)
    return [
        Result(
            benchmark=f"gateway (a) {CLIENTS} agents' streams, {AGENT_RATE} events/s",
            measured=f"p50 {agents['p50_ms']:.1f} ms, p99 {agents['p99_ms']:.1f} ms; "
            f"{agents['once']} of {agents['events']} received once, {agents['strangers']} "
            f"by another agent; {agents['load_events']}",
            floor=floor_text,
            goal=f"p99 <= {GOAL_AGENTS_P99_MS} ms, every event to exactly its agent",
            met=agents_met,
        ),
        Result(
            benchmark=f"gateway (b) {CLIENTS} clients on /ws/sessions, {SESSION_RATE} events/s",
            measured=f"p50 {sessions['p50_ms']:.1f} ms, p99 {sessions['p99_ms']:.1f} ms; "
            f"{sessions['complete']} of {CLIENTS} complete; {sessions['load_events']}",
            floor=floor_text,
            goal=f"p99 <= {GOAL_SESSIONS_P99_MS} ms, every client complete",
            met=sessions_met,
        ),
        Result(
            benchmark=f"gateway (c) {CLIENTS} idle sockets",
            measured=f"{agents['kb']:.1f} / {sessions['kb']:.1f} KB a connection, CPU "
            f"{agents['idle_cpu']:.1%} / {sessions['idle_cpu']:.1%} of a core (agents / sessions); "
            f"{sessions['load']}",
            floor="the gateway worker before the clients connected",
            goal=f"<= {GOAL_KB} KB a connection, <= {GOAL_IDLE_CPU:.0%} of a core",
            met=worst_kb <= GOAL_KB and worst_cpu <= GOAL_IDLE_CPU,
        ),
        Result(
            benchmark=f"heartbeats on the stream ({HEARTBEAT_AGENTS} agents)",
            measured=f"{beats['stream']:,.0f}/s on the stream, x{ratio:.1f}",
            floor=f"HTTP heartbeats in the same run: {beats['http']:,.0f}/s",
            goal=f">= {GOAL_HEARTBEAT_RATIO}x HTTP",
            met=ratio >= GOAL_HEARTBEAT_RATIO,
        ),
    ]
