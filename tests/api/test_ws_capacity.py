"""WebSockets never starve the HTTP API: a process holds at most
WS_MAX_CONNECTIONS_PER_PROCESS sockets, on threads of their own, and refuses the next
with 503 before the upgrade; the per-client cap holds while Redis is down. Real gunicorn,
Celery worker and beat processes (CONTRACT section 8, docs/API.md)."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid

import pytest
import redis as redis_lib
import requests
from sqlalchemy import text

from shared import tokens
from tests.support.database import empty_tables
from tests.support.processes import PrivateRedis, free_port, output, start, stop, wait_for_http
from tests.support.waiting import wait_for

KEY = "c" * 48
pytestmark = [pytest.mark.shared_data, pytest.mark.process]


class Handshake:
    """A raw WebSocket upgrade: the server's answer, and the open socket when it is 101."""

    def __init__(self, base: str, path: str, bearer: str, timeout: float = 10) -> None:
        port = int(base.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {bearer}\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed without an answer: {received!r}"
            received += chunk
        head, body = received.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:])
        }
        length = int(self.headers.get("content-length", 0))
        while len(body) < length:
            body += self.sock.recv(65536)
        self.body = json.loads(body) if self.status != 101 and length else None
        if self.status != 101:
            self.close()

    def alive(self) -> bool:
        """Still open: nothing to read (no close frame, no EOF) within a moment."""
        self.sock.settimeout(0.05)
        try:
            return self.sock.recv(1) == b"\x89"  # at most a ping
        except TimeoutError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def bearer(sub: str, role: str = "viewer") -> str:
    return tokens.mint(key=KEY, role=role, sub=sub)


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


def measure(base: str, token: str, count: int) -> list[float]:
    """`count` sequential GETs on /api/v1, each one's latency in seconds."""
    latencies = []
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        for _ in range(count):
            began = time.perf_counter()
            response = http.get(f"{base}/api/v1/sessions?page_size=5", timeout=10)
            latencies.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
    return latencies


class Heartbeats(threading.Thread):
    """An agent heartbeating twice a second, as the reference agent would more slowly."""

    def __init__(self, base: str, agent: dict) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/api/v1/agents/{agent['id']}/heartbeat"
        self.headers = {"Authorization": f"Bearer {agent['token']}"}
        self.stopped = threading.Event()
        self.answered_at: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                response = requests.post(
                    self.url, json={"current_load": 10}, headers=self.headers, timeout=10
                )
                if response.status_code == 200:
                    self.answered_at.append(time.monotonic())
                else:
                    self.failures.append(f"{response.status_code} {response.text}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def longest_silence(self) -> float:
        times = self.answered_at
        return max(b - a for a, b in zip(times, times[1:], strict=False))


PER_PROCESS = 12
SAMPLES = 600
WORKERS = 2
HEARTBEAT_TIMEOUT = 3


def test_sockets_past_the_cap_leave_the_api_answering(settings, database, tmp_path):
    """Two workers with 4 HTTP threads each (before: 4 threads for everything, and the 9th
    socket held the API). Sockets are opened up to the total cap, and past it: the excess
    is refused with 503 before the upgrade, /api/v1's p99 latency meanwhile stays within 2x
    of the same run's without sockets, and a heartbeating agent does not expire."""
    empty_tables(database)
    env = {
        "ORCHESTRATOR_ENV": "production",
        "API_SECRET_KEY": KEY,
        "WEB_CONCURRENCY": str(WORKERS),
        "WEB_THREADS": "4",
        "WS_MAX_CONNECTIONS_PER_PROCESS": str(PER_PROCESS),
        "WS_MAX_CONNECTIONS_PER_CLIENT": "5",
        "WS_PING_INTERVAL_SECONDS": "300",  # the raw sockets here never answer pings
        "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
        "SWEEP_INTERVAL_SECONDS": "1",
    }
    port = free_port()
    processes = [
        start("web", settings, PORT=str(port), **env),
        start("worker", settings, WORKER_CONCURRENCY="1", **env),
        start("beat", settings, CELERY_BEAT_SCHEDULE=str(tmp_path / "beat"), **env),
    ]
    base = f"http://127.0.0.1:{port}"
    sockets: list[Handshake] = []
    try:
        wait_for_http(f"{base}/ready", processes[0])
        operator = bearer("latency-probe", role="operator")
        agent = requests.post(
            f"{base}/api/v1/agents/register",
            json={"name": f"steady-{uuid.uuid4()}", "type": "QA", "capabilities": ["TESTING"]},
            headers={"Authorization": f"Bearer {operator}"},
            timeout=10,
        ).json()
        heartbeats = Heartbeats(base, agent)
        heartbeats.start()
        measure(base, operator, 50)  # warm up: every worker's pool and caches
        baseline = measure(base, operator, SAMPLES)

        during: list[float] = []
        prober = threading.Thread(
            target=lambda: during.extend(measure(base, operator, SAMPLES)), daemon=True
        )
        prober.start()
        refused = []
        attempt = 0
        while len(sockets) < WORKERS * PER_PROCESS and attempt < 400:
            attempt += 1  # a client identity per three attempts (5 sockets per client)
            handshake = Handshake(base, "/ws/sessions", bearer(f"flood-{attempt // 3}"))
            (sockets if handshake.status == 101 else refused).append(handshake)
        assert len(sockets) == WORKERS * PER_PROCESS, [r.status for r in refused]
        for _ in range(20):  # every process is full now
            attempt += 1
            refused.append(Handshake(base, "/ws/sessions", bearer(f"flood-{attempt // 3}")))
        prober.join(timeout=120)
        assert not prober.is_alive()

        for handshake in refused:
            assert handshake.status == 503, (handshake.status, handshake.body)
            assert handshake.body["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert handshake.headers["retry-after"]
        assert sum(s.alive() for s in sockets) == len(sockets)
        for handshake in sockets:
            handshake.close()
        # the baseline again, the sockets gone: a machine busy with other work meanwhile
        # slows both windows without sockets, not only the one with them
        time.sleep(1)
        after = measure(base, operator, SAMPLES)
        base_p99, during_p99 = max(p99(baseline), p99(after)), p99(during)
        print(
            f"\n/api/v1 p99 {p99(baseline) * 1000:.1f} ms before and {p99(after) * 1000:.1f} ms"
            f" after, without sockets; {during_p99 * 1000:.1f} ms with {len(sockets)} open"
            f" and {len(refused)} refused"
        )
        assert during_p99 <= 2 * base_p99, (base_p99, during_p99)
        with database.transaction() as db:
            status = db.scalar(
                text("SELECT status FROM agents WHERE id = :id"), {"id": agent["id"]}
            )
        assert status != "OFFLINE"
        heartbeats.stopped.set()
        heartbeats.join()
        assert not heartbeats.failures, heartbeats.failures
        assert heartbeats.longest_silence() < HEARTBEAT_TIMEOUT
    finally:
        for handshake in sockets:
            handshake.close()
        for process in processes:
            stop(process)


def test_the_per_client_cap_holds_while_redis_is_down(settings, database):
    """Redis down: each process still bounds a client's sockets (before: no bound at all);
    once Redis is back, the sockets opened meanwhile take their leases, so they count
    across processes again."""
    empty_tables(database)
    server = PrivateRedis()
    server.start()
    port = free_port()
    web = start(
        "web",
        settings.with_overrides(redis_url=server.url),
        PORT=str(port),
        ORCHESTRATOR_ENV="production",
        API_SECRET_KEY=KEY,
        WEB_CONCURRENCY="1",
        WS_MAX_CONNECTIONS_PER_CLIENT="3",
        WS_PING_INTERVAL_SECONDS="300",
    )
    base = f"http://127.0.0.1:{port}"
    sockets: list[Handshake] = []
    try:
        wait_for_http(f"{base}/ready", web)
        server.kill()
        mine = bearer("holder")
        for _ in range(3):
            sockets.append(Handshake(base, "/ws/sessions", mine))
        assert [s.status for s in sockets] == [101, 101, 101], output(web)[-3000:]
        fourth = Handshake(base, "/ws/sessions", mine)
        assert fourth.status == 429 and fourth.body["error"]["code"] == "RATE_LIMITED"
        other = Handshake(base, "/ws/sessions", bearer("someone-else"))
        assert other.status == 101, "another client is not affected"
        other.close()

        server.start()  # empty: the leases come back from the open sockets
        store = redis_lib.Redis.from_url(server.url)
        wait_for(lambda: store.zcard("orchestrator:ws-leases:sub:holder") == 3, timeout=15)
        sockets.pop().close()
        wait_for(lambda: store.zcard("orchestrator:ws-leases:sub:holder") == 2, timeout=15)
        sockets.append(Handshake(base, "/ws/sessions", mine))
        assert sockets[-1].status == 101
        assert Handshake(base, "/ws/sessions", mine).status == 429
    finally:
        for handshake in sockets:
            handshake.close()
        stop(web)
        if server.process.poll() is None:
            server.kill()
