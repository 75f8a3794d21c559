"""Webhooks: deliveries a second to a fast receiver, and the latency they add from the
commit of an event to its arrival at the receiver.

A real stack on a database of its own: the Procfile's `web` (its relay thread numbers
committed events and writes their deliveries), `webhooks` (threads, WEBHOOK_CONCURRENCY
16) and `worker` (prefork 2, for the floor job only), no beat. The receiver is
http.server (threads) in this process, answering 200 at once and noting when each event
id arrived. One webhook, for `task.*`.

- Latency: 300 events at 20 a second, each committed in its own transaction by this
  process (as a request would); latency = arrival at the receiver - the commit's return,
  both on this machine's clock. Goal: p95 <= 100 ms on an idle stack. Floor, interleaved:
  a bare Celery round trip on the same broker (bench/floor_job.py via the API's job
  sender: send -> effect seen), the least a job-based delivery can take.
- Throughput: 3,000 events committed at once; deliveries a second from the commit until
  the last arrived. Floor: the same receiver taking 3,000 POSTs from 16 threads of this
  process (plain http.client, no database, no Celery): what the receiver and the loopback
  allow at that concurrency.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis as redis_lib
from sqlalchemy import text

from bench.common import Result, benchmark_database, paced, percentiles
from bench.dispatch import floor_trips
from bench.stack import celery_worker, procfile_process, web_server
from orchestrator_api.job_sender import make_job_sender
from shared import events
from shared.db import Database
from shared.services import webhooks

REDIS_DB = 9
LATENCY_EVENTS = 300
RATE = 20
ROUNDS = 5
BURST = 3000
CONCURRENCY = 16
GOAL_P95_MS = 100.0
DELIVERY_TIMEOUT_SECONDS = 120


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen() backlog (5 by default: resets under a burst)


class Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event_id = self.headers.get("X-Orchestrator-Event-Id", "")
                now = time.time()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.changed:
                    receiver.arrived.setdefault(event_id, now)
                    receiver.changed.notify_all()

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.arrived) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run() -> list[Result]:
    receiver = Receiver()
    try:
        with (
            benchmark_database("webhooks", REDIS_DB) as settings,
            web_server(settings) as server,
            celery_worker(settings, include="bench.floor_job"),
            procfile_process("webhooks", settings, WEBHOOK_CONCURRENCY=str(CONCURRENCY)),
        ):
            print(f"  web {server.label}, webhooks worker threads {CONCURRENCY}, worker 2, no beat")
            database = Database(settings)
            with database.transaction() as db:
                webhooks.create(db, url=receiver.url, event_types=["task.*"])
            send = make_job_sender(settings)
            redis = redis_lib.Redis.from_url(settings.redis_url)

            warm = commit_events(database, 20, RATE)
            receiver.wait_for(len(warm), 30)
            floor_trips(send, redis, 10)
            latency_ms: list[float] = []
            floor_ms: list[float] = []
            lost = 0
            for _ in range(ROUNDS):
                floor_ms += floor_trips(send, redis, LATENCY_EVENTS // ROUNDS)
                committed = commit_events(database, LATENCY_EVENTS // ROUNDS, RATE)
                lost += collect(database, receiver, committed, latency_ms)

            expected = len(receiver.arrived) + BURST
            sampler = QueueSampler(redis)
            burst_ids, began = commit_burst(database, BURST)
            done = receiver.wait_for(expected, DELIVERY_TIMEOUT_SECONDS)
            sampler.stop()
            peak_queue = max(sampler.lengths, default=0)
            if not done:
                print("  not all delivered:", delivery_states(database))
            last = max(receiver.arrived.get(event_id, 0.0) for event_id in burst_ids)
            throughput = BURST / (last - began) if done else 0.0
            send.client.close()
            redis.close()
            database.dispose()
        floor_rate = receiver_floor(receiver.url, BURST)
    finally:
        receiver.close()

    p50, p95, p99 = percentiles(latency_ms, 50, 95, 99)
    f50, f95 = percentiles(floor_ms, 50, 95)
    print(
        f"  commit -> arrival, {len(latency_ms)} events at {RATE}/s: p50 {p50:.1f} ms, "
        f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(latency_ms):.1f} ms; not delivered: {lost}"
    )
    print(f"  floor (Celery round trip): p50 {f50:.1f} ms, p95 {f95:.1f} ms")
    print(
        f"  {BURST} events at once: {throughput:.0f} deliveries/s; the receiver alone takes "
        f"{floor_rate:.0f} POSTs/s from {CONCURRENCY} threads; the queue peaked at "
        f"{peak_queue} jobs (the relay sends faster than the worker delivers)"
    )
    return [
        Result(
            benchmark=f"webhooks latency (web {server.label}, webhooks threads {CONCURRENCY})",
            measured=f"commit -> arrival p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms "
            f"({LATENCY_EVENTS} events at {RATE}/s)",
            floor=f"Celery round trip p50 {f50:.1f} ms, p95 {f95:.1f} ms",
            goal=f"p95 <= {GOAL_P95_MS:.0f} ms: {p95:.1f}; all delivered: {lost == 0}",
            met=p95 <= GOAL_P95_MS and lost == 0,
        ),
        Result(
            benchmark="webhooks throughput (one webhook, a fast receiver)",
            measured=f"{throughput:.0f} deliveries/s ({BURST} events committed at once)",
            floor=f"receiver alone: {floor_rate:.0f} POSTs/s from {CONCURRENCY} threads",
            goal=f"all {BURST} delivered within {DELIVERY_TIMEOUT_SECONDS} s: {done}",
            met=done,
        ),
    ]


class QueueSampler(threading.Thread):
    """The length of the `webhooks` queue every half second."""

    def __init__(self, redis) -> None:
        super().__init__(daemon=True)
        self.redis, self.lengths, self.stopped = redis, [], threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.lengths.append(self.redis.llen("webhooks"))

    def stop(self) -> None:
        self.stopped.set()


def commit_events(database: Database, count: int, rate: float) -> dict[str, float]:
    """Events committed one a transaction on a schedule: id -> when the commit returned.
    Ids are given by the relay; the task_id in the payload names the event until then."""
    committed: dict[str, float] = {}
    for _ in paced(count, rate):
        marker = str(uuid.uuid4())
        with database.transaction() as db:
            events.record(db, events.TASK_STATUS_CHANGED, task_id=marker, status="COMPLETED")
        committed[marker] = time.time()
    return committed


def collect(
    database: Database, receiver: Receiver, committed: dict[str, float], latency_ms: list[float]
) -> int:
    """Latencies of these events, in ms, once they arrived; returns how many never did."""
    ids = event_ids(database, committed)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(i not in receiver.arrived for i in ids.values()):
        time.sleep(0.05)
    lost = 0
    for marker, event_id in ids.items():
        if event_id in receiver.arrived:
            latency_ms.append((receiver.arrived[event_id] - committed[marker]) * 1000)
        else:
            lost += 1
    return lost


def event_ids(database: Database, committed: dict[str, float]) -> dict[str, str]:
    """The public id each marked event got (waits until the relay numbered them all)."""
    query = text(
        "SELECT payload->>'task_id' AS marker, seq FROM outbox_events "
        "WHERE payload->>'task_id' = ANY(:markers) AND seq IS NOT NULL"
    )
    deadline = time.monotonic() + 30
    while True:
        with database.engine.connect() as connection:
            rows = connection.execute(query, {"markers": list(committed)}).all()
        if len(rows) == len(committed) or time.monotonic() > deadline:
            return {row.marker: str(row.seq) for row in rows}
        time.sleep(0.05)


def commit_burst(database: Database, count: int) -> tuple[list[str], float]:
    with database.transaction() as db:
        for n in range(count):
            events.record(db, events.TASK_CREATED, task_id=str(uuid.uuid4()), n=n)
    began = time.time()
    deadline = time.monotonic() + 30
    while True:
        with database.engine.connect() as connection:
            ids = list(
                connection.scalars(
                    text(
                        "SELECT seq FROM outbox_events WHERE type = 'task.created' "
                        "AND seq IS NOT NULL"
                    )
                )
            )
        if len(ids) >= count or time.monotonic() > deadline:
            return [str(i) for i in ids], began
        time.sleep(0.05)


def delivery_states(database: Database) -> list[tuple]:
    query = text(
        "SELECT status, left(last_error, 80) AS error, count(*) FROM webhook_deliveries "
        "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"
    )
    with database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def receiver_floor(url: str, count: int) -> float:
    """POSTs a second the receiver takes from CONCURRENCY threads, without the stack."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    body = b'{"id":"0","type":"task.created","payload":{},"timestamp":"x"}'
    per_thread = count // CONCURRENCY

    def post_many(n: int) -> None:
        for i in range(per_thread):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            headers = {"Content-Type": "application/json", "X-Orchestrator-Event-Id": f"f{n}-{i}"}
            connection.request("POST", "/hook", body=body, headers=headers)
            connection.getresponse().read()
            connection.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(post_many, range(CONCURRENCY)))
    return per_thread * CONCURRENCY / (time.perf_counter() - began)
