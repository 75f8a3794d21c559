"""1,000 WebSocket clients on `/ws/sessions` of one gunicorn `web`, with events at 100/s.

The Procfile's `web` runs with WEB_CONCURRENCY=2 and WEB_THREADS=600 (gunicorn's gthread
worker holds one thread per open socket); BENCH_WS_WEB adds other WORKERSxTHREADS
settings to compare. A child process opens the 1,000 connections with a minimal asyncio
client (bench/ws_client.py, standard library only). Then `session.created` rows are
inserted straight into `outbox_events` at 100 a second for 10 s, one row a transaction,
so a row's `created_at` (the event's `timestamp`) is its commit time to within a
statement; from there the web processes' relay and hub carry them to the sockets as in
production. No HTTP load: the sockets are the only work of the server.

Measured: commit-to-client latency (client receive time - the event's `timestamp`, same
clock) over every message of every client, p50 and p99; memory per connection (RSS of the
gunicorn workers with the clients connected and idle, minus before they connected, / the
clients); and that every client received every event id, in order, with no gap or repeat.
The floor: bare Redis XADD -> XREAD BLOCK latency to one subscriber, at 100/s for 5 s.
Goals: p99 <= 250 ms, <= 200 KB a connection, every client complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
import uuid
from urllib.parse import urlsplit

import redis as redis_lib
from sqlalchemy import create_engine, text

from bench import ws_client
from bench.common import Result, benchmark_database, paced, percentiles
from bench.stack import cpu_seconds, rss_bytes, web_server, worker_pids

REDIS_DB = 11
CLIENTS = int(os.environ.get("BENCH_WS_CLIENTS", "1000"))
RATE = 100  # events a second
SECONDS = int(os.environ.get("BENCH_WS_SECONDS", "10"))
WEB = os.environ.get("BENCH_WS_WEB", "2x600")  # WORKERSxTHREADS, the first is the headline
FLOOR_SECONDS = 5
SETTLE_SECONDS = 2
GOAL_P99_MS = 250
GOAL_KB = 200

INSERT_SQL = text("INSERT INTO outbox_events (type, payload) VALUES ('session.created', :payload)")
PUBLISHED_SQL = text(
    "SELECT count(*) FILTER (WHERE seq IS NULL), coalesce(max(seq), 0) FROM outbox_events"
)


def run() -> list[Result]:
    measurements = []
    with benchmark_database("websocket", REDIS_DB) as settings:
        floor = redis_floor(settings.redis_url)
        print(f"  floor (Redis XADD -> XREAD BLOCK): p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms")
        engine = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
        try:
            for setting in WEB.split(","):
                workers, threads = map(int, setting.split("x"))
                measurements.append(measure(settings, engine, (workers, threads)))
        finally:
            engine.dispose()
    if len(measurements) > 1:
        print_comparison(measurements)
    return [result(measurements[0], floor)]


def redis_floor(url: str) -> tuple[float, float]:
    """p50 and p99 (ms) from XADD of a timestamp to its arrival at a blocked XREAD."""
    key, count = "bench:floor", RATE * FLOOR_SECONDS
    producer, consumer = redis_lib.Redis.from_url(url), redis_lib.Redis.from_url(url)
    latencies: list[float] = []

    def read() -> None:
        last = "0-0"
        while len(latencies) < count:
            for _, entries in consumer.xread({key: last}, block=1000) or []:
                for entry_id, fields in entries:
                    latencies.append((time.time() - float(fields[b"t"])) * 1000)
                    last = entry_id

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for _ in paced(count, RATE):
        producer.xadd(key, {"t": repr(time.time())})
    reader.join(timeout=10)
    producer.delete(key)
    producer.close()
    consumer.close()
    return tuple(percentiles(latencies, 50, 99))


def measure(settings, engine, workers_threads: tuple[int, int]) -> dict:
    with web_server(settings, workers_threads, WS_MAX_CONNECTIONS_PER_CLIENT="10000") as server:
        pids = worker_pids(server)
        time.sleep(SETTLE_SECONDS)
        idle_rss, idle_sockets = rss_bytes(pids), [socket_count(pid) for pid in pids]
        context = multiprocessing.get_context("spawn")
        pipe, child_pipe = context.Pipe()
        clients = context.Process(
            target=ws_client.run_clients,
            args=("127.0.0.1", urlsplit(server.url).port, "/ws/sessions", CLIENTS, child_pipe),
            daemon=True,
        )
        clients.start()
        try:
            _, connected, errors = receive(pipe, clients, timeout=300)
            time.sleep(SETTLE_SECONDS)
            connected_rss = rss_bytes(pids)
            sockets = [socket_count(pid) - n for pid, n in zip(pids, idle_sockets, strict=True)]
            print(
                f"  web {server.label}: {connected} of {CLIENTS} clients connected "
                f"(new sockets per worker: {', '.join(map(str, sockets))})"
                + (f"; errors: {errors}" if errors else "")
            )
            cpu, began = cpu_seconds(pids), time.time()
            first, last, late = produce(engine)
            pipe.send(("expect", first, last))
            summary = receive(pipe, clients, timeout=ws_client.DRAIN_SECONDS + 60)
            summary.update(
                server_cpu=cpu_seconds(pids) - cpu, seconds=summary["drained_at"] - began
            )
            after_rss = rss_bytes(pids)
        finally:
            if clients.is_alive():
                clients.kill()
            clients.join()
    summary.update(
        web=server.label,
        connected=connected,
        events=last - first + 1,
        late=late,
        kb_per_connection=(connected_rss - idle_rss) / 1024 / max(connected, 1),
        rss_mb=[rss / 2**20 for rss in (idle_rss, connected_rss, after_rss)],
    )
    report(summary)
    return summary


def report(m: dict) -> None:
    print(
        f"    {m['events']} events ({m['late']} inserted > 10 ms late) to {m['clients']} clients:"
        f" {m['messages']:,} messages, latency p50 {ms(m['p50_ms'])}, "
        f"p99 {ms(m['p99_ms'])}, max {ms(m['max_ms'])}"
    )
    print(
        f"    complete clients {m['complete']} of {m['clients']}, missing messages "
        f"{m['missing']}, closed by the server {m['closed_by_server']}, "
        f"other messages {m['other_messages']}"
    )
    print(
        f"    CPU from the first event until every client had the last ({m['seconds']:.1f} s): "
        f"gunicorn workers {m['server_cpu']:.1f} s, client process {m['client_cpu']:.1f} s"
    )
    idle, connected, after = m["rss_mb"]
    print(
        f"    workers' RSS: {idle:.0f} MB idle, {connected:.0f} MB connected, {after:.0f} MB "
        f"after the events: {m['kb_per_connection']:.0f} KB a connection"
    )


def receive(pipe, process, *, timeout: float):
    deadline = time.monotonic() + timeout
    while not pipe.poll(0.5):
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the WebSocket client process did not answer")
    return pipe.recv()


def socket_count(pid: int) -> int:
    """Open sockets of a process (its WebSocket connections, plus a few of its own)."""
    fds = f"/proc/{pid}/fd"
    return sum(os.readlink(f"{fds}/{fd}").startswith("socket:") for fd in os.listdir(fds))


def produce(engine) -> tuple[int, int, int]:
    """RATE events a second for SECONDS; their first and last ids once all are published,
    and how many inserts were more than 10 ms behind their schedule."""
    late = 0
    with engine.connect() as connection:
        _, before = connection.execute(PUBLISHED_SQL).one()
        began = time.perf_counter()
        for n in paced(RATE * SECONDS, RATE):
            late += time.perf_counter() - began - n / RATE > 0.01
            payload = {"session_id": str(uuid.uuid4()), "status": "PENDING"}
            connection.execute(INSERT_SQL, {"payload": json.dumps(payload)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            unpublished, last = connection.execute(PUBLISHED_SQL).one()
            if not unpublished:
                return before + 1, last, late
            time.sleep(0.05)
    raise RuntimeError(f"{unpublished} events still unpublished after 60 s")


def print_comparison(measurements: list[dict]) -> None:
    print(
        "\n| web (workers x threads) | connected | p50 ms | p99 ms | KB a connection "
        "| complete clients |\n|---|--:|--:|--:|--:|--:|"
    )
    for m in measurements:
        print(
            f"| {m['web']} | {m['connected']} | {m['p50_ms']:,.0f} | {m['p99_ms']:,.0f} "
            f"| {m['kb_per_connection']:.0f} | {m['complete']} |"
        )


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def result(m: dict, floor: tuple[float, float]) -> Result:
    complete = m["connected"] == CLIENTS and m["complete"] == CLIENTS
    return Result(
        benchmark=f"websocket (web {m['web']}, {CLIENTS} clients, {RATE} events/s)",
        measured=f"p50 {ms(m['p50_ms'])}, p99 {ms(m['p99_ms'])}; "
        f"{m['kb_per_connection']:.0f} KB a connection",
        floor=f"Redis XADD -> XREAD p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms",
        goal=f"p99 <= {GOAL_P99_MS} ms; <= {GOAL_KB} KB; every client every event: "
        f"{m['complete']} of {CLIENTS} complete",
        met=m["p99_ms"] <= GOAL_P99_MS and m["kb_per_connection"] <= GOAL_KB and complete,
    )
