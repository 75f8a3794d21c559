"""Many hosts (issue 19), made of network namespaces on this machine: a data host (the root
namespace: this machine's PostgreSQL and Redis behind an HAProxy in TCP mode on the
bridge's address), two web hosts behind a load balancer (HAProxy, HTTP mode, in a host of
its own), two worker hosts and a beat host, each running the Procfile's processes.

The tests run in this order on one cluster, each leaving what the next needs: the limits
hold across both web hosts; tasks created through either web host are assigned once, by
workers on both hosts; a WebSocket client whose web host is killed resumes through the
balancer with nothing missed; killing a worker host loses no task; killing the beat host
and starting a beat on another loses nothing. docs/OPERATIONS.md ("Several hosts")
describes this deployment and the figures these tests print.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from simple_websocket import ConnectionError
from sqlalchemy import text

from orchestrator_client import OrchestratorClient
from orchestrator_client.agent import ReferenceAgent
from orchestrator_client.ws_client import Client
from shared import tokens
from tests.support import netns
from tests.support.database import empty_tables
from tests.support.metrics import parse
from tests.support.processes import output, procfile
from tests.support.redis_claim import claimed_redis_url
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process, pytest.mark.chaos]

SECRET_KEY = "multi-host-tests-" + "k" * 40
RATE_LIMIT = 240  # per minute, per client
SOCKET_CAP = 4
HEARTBEAT_TIMEOUT = 6
SWEEP_INTERVAL = 1
LB_PORT = 8080
WEB_PORT = 8000
GATEWAY_PORT = 8001
CAPABILITIES = ["CODE_GENERATION", "TESTING"]
ENV = {
    "API_SECRET_KEY": SECRET_KEY,
    "RATE_LIMIT": f"{RATE_LIMIT}/minute",
    "WS_MAX_CONNECTIONS_PER_CLIENT": str(SOCKET_CAP),
    "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
    "SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL),
    # the machine and its PostgreSQL are shared: small pools
    "WEB_CONCURRENCY": "1",
    "WEB_THREADS": "4",
    "GATEWAY_CONCURRENCY": "1",
    "WORKER_CONCURRENCY": "1",
}
WEB_HOSTS = ("web-a", "web-b")
WORKER_HOSTS = ("worker-a", "worker-b")
# The WebSocket gateway, when the Procfile has one, runs beside `web` on each web host and
# the balancer sends /ws to it.
WITH_GATEWAY = "gateway" in procfile()


def token(sub: str) -> str:
    return tokens.mint(key=SECRET_KEY, sub=sub, role="operator")


class Cluster:
    def __init__(self, network: netns.Network) -> None:
        self.network = network
        self.hosts = network.hosts
        self.base = f"http://{self.hosts['lb'].address}:{LB_PORT}"
        self.ws_base = self.base.replace("http", "ws")

    def direct(self, host: str, port: int = WEB_PORT) -> str:
        return f"http://{self.hosts[host].address}:{port}"

    def socket_host(self, host: str) -> str:
        return self.direct(host, GATEWAY_PORT if WITH_GATEWAY else WEB_PORT)

    def open_sockets(self) -> dict[str, int]:
        """The streams open on each web host, from its own /metrics."""
        counts = {}
        for host in WEB_HOSTS:
            try:
                scraped = requests.get(f"{self.socket_host(host)}/metrics", timeout=5)
            except requests.RequestException:
                continue  # a host killed by an earlier test
            counts[host] = int(parse(scraped.text)[("orchestrator_websocket_connections",)])
        return counts

    def assignments(self, host: str) -> dict[str, str]:
        """task id -> agent id, from the `assigned N tasks` lines of the host's worker."""
        found = {}
        for process in self.hosts[host].processes:
            for line in output(process).splitlines():
                if '"assignments"' in line:
                    found.update(json.loads(line)["assignments"])
        return found


@pytest.fixture(scope="module")
def cluster(settings, database):
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host test: {reason}")
    netns.remove_stale()
    empty_tables(database)  # earlier modules' PENDING tasks would go to this fleet
    # A Redis db of the cluster's own: the run's in-process Celery worker (started by an
    # earlier module, it lives for the session) consumes the run's broker and would
    # assign the cluster's tasks itself.
    with claimed_redis_url(use_env=False) as redis_url:
        yield from _run_cluster(netns.Network(settings.with_overrides(redis_url=redis_url)))


def _run_cluster(network: netns.Network):
    try:
        network.open()
        for name in ("lb", *WEB_HOSTS, *WORKER_HOSTS, "beat"):
            network.add_host(name)
        hosts = network.hosts
        started = time.monotonic()
        for name in WEB_HOSTS:
            hosts[name].start("web", PORT=str(WEB_PORT), **ENV)
            if WITH_GATEWAY:
                hosts[name].start("gateway", GATEWAY_PORT=str(GATEWAY_PORT), **ENV)
        for name in WORKER_HOSTS:
            hosts[name].start("worker", LOG_LEVEL="INFO", **ENV)
        start_beat(hosts["beat"])
        web = {name: f"{hosts[name].address}:{WEB_PORT}" for name in WEB_HOSTS}
        sockets = (
            {name: f"{hosts[name].address}:{GATEWAY_PORT}" for name in WEB_HOSTS}
            if WITH_GATEWAY
            else None
        )
        config = os.path.join(hosts["lb"].directory, "haproxy.cfg")
        with open(config, "w") as handle:
            handle.write(netns.load_balancer_config(port=LB_PORT, web=web, websocket=sockets))
        hosts["lb"].popen(["haproxy", "-db", "-f", config], "haproxy")
        cluster = Cluster(network)
        for name in WEB_HOSTS:
            wait_ready(cluster.direct(name), hosts[name])
            if WITH_GATEWAY:
                wait_ready(cluster.direct(name, GATEWAY_PORT), hosts[name])
        for name in WORKER_HOSTS:  # each host its own hostname, so its own Celery node name
            wait_for(lambda name=name: f"@{name} ready." in host_output(hosts[name]), timeout=60)
        wait_for(lambda: _answers(f"{cluster.base}/ready"), timeout=30)
        print(f"\nmulti-host: cluster up in {time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        network.close()
    leftovers = network.leftovers()
    assert not leftovers, f"not cleaned up: {leftovers}"


def start_beat(host: netns.Host):
    schedule = os.path.join(host.directory, "beat-schedule")
    return host.start("beat", CELERY_BEAT_SCHEDULE=schedule, LOG_LEVEL="INFO", **ENV)


def host_output(host: netns.Host) -> str:
    return "".join(output(process) for process in host.processes)


def wait_ready(base: str, host: netns.Host) -> None:
    def ready():
        for process in host.processes:
            assert process.poll() is None, output(process)
        return _answers(f"{base}/ready")

    wait_for(ready, timeout=60, interval=0.2)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def fleet(cluster):
    """Four reference agents in the default pool, each on its own token, through the
    balancer."""
    client = OrchestratorClient(cluster.base, token=token("fleet"), timeout=10)
    agents = [
        ReferenceAgent(
            client,
            f"multi-host-agent-{index}",
            CAPABILITIES,
            max_tasks=1,
            work_seconds=0.2,
            progress_steps=1,
            heartbeat_seconds=1.5,
            seed=index,
        ).start()
        for index in range(4)
    ]
    wait_for(lambda: all(agent.streaming for agent in agents), timeout=20)
    yield agents
    for agent in agents:
        agent.request_stop()
    for agent in agents:
        agent.stop()


def figures(line: str) -> None:
    print(f"\nmulti-host: {line}")


def test_rate_limit_and_socket_cap_hold_across_both_web_hosts(cluster, capsys):
    headers = {"Authorization": f"Bearer {token('rate-probe')}"}
    local = threading.local()

    def call(_):
        if not hasattr(local, "http"):
            local.http = requests.Session()
        answer = local.http.get(f"{cluster.base}/api/v1/sessions?page_size=1", headers=headers)
        return answer.status_code, answer.headers.get("X-Served-By")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, range(RATE_LIMIT + 20)))
    accepted = Counter(host for status, host in answers if status == 200)
    refused = Counter(host for status, host in answers if status == 429)
    assert sum(accepted.values()) == RATE_LIMIT and sum(refused.values()) == 20, answers
    assert set(accepted) == set(WEB_HOSTS) and set(refused) == set(WEB_HOSTS), answers
    for host in WEB_HOSTS:  # asked directly, each host knows the budget is spent
        direct = requests.get(f"{cluster.direct(host)}/api/v1/sessions", headers=headers)
        assert direct.status_code == 429 and direct.json()["error"]["code"] == "RATE_LIMITED"

    probe = token("socket-probe")
    url = f"{cluster.ws_base}/ws/sessions?token={probe}"
    sockets = [Client.connect(url) for _ in range(SOCKET_CAP)]
    try:
        spread = wait_for(lambda: _when(cluster.open_sockets(), lambda c: all(c.values())))
        assert sum(spread.values()) == SOCKET_CAP, spread
        with pytest.raises(ConnectionError) as through_balancer:
            Client.connect(url)
        assert through_balancer.value.status_code == 429
        for host in WEB_HOSTS:
            direct_url = cluster.socket_host(host).replace("http", "ws", 1)
            with pytest.raises(ConnectionError) as direct:
                Client.connect(f"{direct_url}/ws/sessions?token={probe}")
            assert direct.value.status_code == 429, host
        sockets.pop().close()  # a slot freed on one host is free on the other
        sockets.append(wait_for(lambda: _connect_or_none(url), timeout=10, interval=0.2))
    finally:
        for socket in sockets:
            socket.close()
    with capsys.disabled():
        figures(
            f"limits: {RATE_LIMIT}/minute answered {dict(accepted)} then 429 {dict(refused)}; "
            f"{SOCKET_CAP} sockets open as {spread}, the next refused 429 on every host"
        )


def _when(value, condition):
    return value if condition(value) else None


def _connect_or_none(url: str):
    try:
        return Client.connect(url)
    except ConnectionError as exc:
        assert exc.status_code == 429
        return None


def test_tasks_from_either_web_host_are_assigned_once_by_both_worker_hosts(
    cluster, fleet, database, capsys
):
    creator = token("creator")
    through = {host: OrchestratorClient(cluster.direct(host), token=creator) for host in WEB_HOSTS}
    session = through["web-a"].create_session("multi-host: assignment")
    through["web-b"].start_session(session["id"])
    created = {host: [] for host in WEB_HOSTS}
    for index in range(24):
        host = WEB_HOSTS[index % 2]
        created[host].append(through[host].create_task(session["id"], f"task {index}")["id"])
    task_ids = created["web-a"] + created["web-b"]
    wait_for(lambda: _statuses(database, session["id"]) == {"COMPLETED"}, timeout=60)

    assert _assigned_counts(database, session["id"]) == dict.fromkeys(task_ids, 1)
    by_worker = {host: set(cluster.assignments(host)) & set(task_ids) for host in WORKER_HOSTS}
    assert by_worker["worker-a"] and by_worker["worker-b"], by_worker
    assert not by_worker["worker-a"] & by_worker["worker-b"]
    assert by_worker["worker-a"] | by_worker["worker-b"] == set(task_ids)
    with database.engine.connect() as connection:
        connections = connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        )
    with capsys.disabled():
        figures(
            f"assignment: 24 tasks (12 through each web host) assigned once each, "
            f"{len(by_worker['worker-a'])} by worker-a and {len(by_worker['worker-b'])} by "
            f"worker-b; {connections} PostgreSQL connections open (the test's own included)"
        )


class Observer(threading.Thread):
    """A /ws/sessions client through the balancer: the ids it received, and when, with how
    many sockets it had opened by then."""

    def __init__(self, client: OrchestratorClient, last_event_id: int) -> None:
        super().__init__(daemon=True)
        self.stream = client.events("/ws/sessions", last_event_id=last_event_id, backoff=0.2)
        self.received: list[tuple[float, int, int]] = []  # (monotonic time, id, connections)
        self.sessions_created: set[str] = set()

    def run(self):
        for message in self.stream:
            if str(message.get("id", "")).isdigit():
                self.received.append(
                    (time.monotonic(), int(message["id"]), self.stream.connections)
                )
            if message.get("type") == "session.created":
                self.sessions_created.add(message["payload"]["session_id"])

    @property
    def ids(self) -> list[int]:
        return [event_id for _, event_id, _ in self.received]


class Producer(threading.Thread):
    """Creates sessions through the balancer until stopped (each one is an event)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.client = OrchestratorClient(base, token=token("producer"), timeout=5)
        self.created: list[str] = []
        self.errors: list[Exception] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            try:
                self.created.append(self.client.create_session("produced")["id"])
            except Exception as exc:  # the client's retries did not get through
                self.errors.append(exc)


def test_a_socket_whose_web_host_dies_resumes_through_the_balancer(cluster, database, capsys):
    before = cluster.open_sockets()
    start = _latest_session_event(database)  # everything after it must arrive
    observer = Observer(OrchestratorClient(cluster.base, token=token("observer")), start)
    observer.start()
    wait_for(observer.stream.connected.is_set, timeout=10)
    opened = sum(before.values()) + 1
    after = wait_for(lambda: _when(cluster.open_sockets(), lambda c: sum(c.values()) == opened))
    [holder] = [host for host in WEB_HOSTS if after[host] > before[host]]
    producer = Producer(cluster.base)
    producer.start()
    try:
        wait_for(lambda: len(observer.received) >= 5, timeout=15)
        killed_at = time.monotonic()
        cluster.hosts[holder].kill()
        wait_for(lambda: any(c == 2 for _, _, c in observer.received), timeout=30)
        time.sleep(2)  # events keep coming while the client is on the other host
    finally:
        producer.done.set()
        producer.join(timeout=30)
    wait_for(lambda: _unnumbered_events(database) == 0, timeout=30)  # the relay numbers them
    latest = _latest_session_event(database)
    wait_for(lambda: observer.ids and observer.ids[-1] >= latest, timeout=30)
    observer.stream.close()
    observer.join(timeout=10)

    expected = _session_events(database, since=start + 1)
    missed = sorted(set(expected) - set(observer.ids))
    reconnected = observer.stream.connections
    resumed_at = next(t for t, _, c in observer.received if c == 2)
    assert missed == [] and observer.ids == sorted(set(observer.ids)) == expected
    assert reconnected == 2 and producer.errors == []
    assert len(_sessions(database, producer.created)) == len(producer.created)
    assert observer.sessions_created >= set(producer.created)
    with capsys.disabled():
        figures(
            f"resume: {holder} killed holding the socket; first event on the new socket "
            f"{resumed_at - killed_at:.2f}s after the kill; {len(observer.ids)} events, none "
            "missed or repeated; "
            f"{len(producer.created)} sessions created through the balancer meanwhile, "
            "no request failed"
        )


def test_killing_a_worker_host_loses_no_task(cluster, fleet, database, capsys):
    client = OrchestratorClient(cluster.base, token=token("worker-chaos"))
    session = client.create_session("multi-host: a worker host dies")
    client.start_session(session["id"])
    task_ids = [client.create_task(session["id"], f"task {i}")["id"] for i in range(24)]
    wait_for(lambda: _count(database, session["id"], "COMPLETED") >= 6, timeout=30)
    before_kill = set(cluster.assignments("worker-a")) & set(task_ids)
    killed_at = time.monotonic()
    cluster.hosts["worker-a"].kill()
    left = len(task_ids) - _count(database, session["id"], "COMPLETED")
    wait_for(lambda: _statuses(database, session["id"]) == {"COMPLETED"}, timeout=60)
    finished_in = time.monotonic() - killed_at

    assert _assigned_counts(database, session["id"]) == dict.fromkeys(task_ids, 1)
    assert _completed_counts(database, session["id"]) == dict.fromkeys(task_ids, 1)
    later = set(cluster.assignments("worker-b")) & set(task_ids)
    assert before_kill | later == set(task_ids)
    with capsys.disabled():
        figures(
            f"worker host killed: {left} of 24 tasks unfinished at the kill "
            f"(worker-a had assigned {len(before_kill)}), all completed once "
            f"{finished_in:.1f}s later by worker-b's assignments"
        )


def test_killing_the_beat_host_and_starting_beat_elsewhere_loses_nothing(cluster, database, capsys):
    """The heartbeat expiry is beat's alone: an agent that goes silent holding a task
    while beat is dead keeps it until a beat runs again, on another host."""
    operator = OrchestratorClient(cluster.base, token=token("takeover"))
    silent = operator.register_agent(
        "silent", "FULLSTACK", CAPABILITIES, max_concurrent_tasks=1, pool="takeover"
    )
    registered_at = time.monotonic()
    session = operator.create_session("multi-host: beat takeover", pool="takeover")
    operator.start_session(session["id"])
    task = operator.create_task(session["id"], "held by a silent agent")
    wait_for(lambda: operator.get_task(task["id"])["assigned_agent_id"] == silent["id"])
    cluster.hosts["beat"].kill()
    killed_at = time.monotonic()
    # beat is gone: past the heartbeat timeout and a few sweeps, nothing expires the agent
    time.sleep(max(0.0, registered_at + HEARTBEAT_TIMEOUT + 3 * SWEEP_INTERVAL - time.monotonic()))
    assert operator.get_agent(silent["id"])["status"] != "OFFLINE"
    assert operator.get_task(task["id"])["status"] == "ASSIGNED"

    live = ReferenceAgent(
        operator, "live", CAPABILITIES, work_seconds=0.2, heartbeat_seconds=1.5, pool="takeover"
    ).start()
    try:
        replacement_at = time.monotonic()
        start_beat(cluster.hosts["worker-b"])
        wait_for(lambda: operator.get_agent(silent["id"])["status"] == "OFFLINE", timeout=30)
        offline_at = time.monotonic()
        wait_for(lambda: operator.get_task(task["id"])["status"] == "COMPLETED", timeout=30)
        completed_at = time.monotonic()
    finally:
        live.stop()
    assert operator.get_task(task["id"])["assigned_agent_id"] == live.id
    assert live.completed == [task["id"]]
    with database.engine.connect() as connection:
        unfinished = connection.scalar(
            text("SELECT count(*) FROM tasks WHERE status <> 'COMPLETED'")
        )
    assert unfinished == 0
    with capsys.disabled():
        figures(
            f"beat takeover: beat down {replacement_at - killed_at:.1f}s; the beat started on "
            f"worker-b expired the silent agent {offline_at - replacement_at:.1f}s after its "
            f"start and its task was completed by another agent "
            f"{completed_at - replacement_at:.1f}s after it"
        )


def _statuses(database, session_id: str) -> set[str]:
    with database.engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT DISTINCT status FROM tasks WHERE session_id = :s"), {"s": session_id}
            ).scalars()
        )


def _count(database, session_id: str, status: str) -> int:
    with database.engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM tasks WHERE session_id = :s AND status = :status"),
            {"s": session_id, "status": status},
        )


def _event_counts(database, session_id: str, condition: str) -> dict[str, int]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT payload->>'task_id', count(*) FROM outbox_events"
                f" WHERE payload->>'session_id' = :s AND {condition}"
                " GROUP BY payload->>'task_id'"
            ),
            {"s": session_id},
        )
        return dict(rows.all())


def _assigned_counts(database, session_id: str) -> dict[str, int]:
    return _event_counts(database, session_id, "type = 'task.assigned'")


def _completed_counts(database, session_id: str) -> dict[str, int]:
    return _event_counts(
        database,
        session_id,
        "type = 'task.status_changed' AND payload->>'status' = 'COMPLETED'",
    )


SESSION_STREAM = "(type LIKE 'session.%' OR type LIKE 'task.%')"


def _latest_session_event(database) -> int:
    with database.engine.connect() as connection:
        return connection.scalar(
            text(f"SELECT coalesce(max(seq), 0) FROM outbox_events WHERE {SESSION_STREAM}")
        )


def _unnumbered_events(database) -> int:
    with database.engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM outbox_events WHERE seq IS NULL"))


def _session_events(database, since: int) -> list[int]:
    with database.engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    f"SELECT seq FROM outbox_events WHERE seq >= :since AND {SESSION_STREAM}"
                    " ORDER BY seq"
                ),
                {"since": since},
            ).scalars()
        )


def _sessions(database, ids: list[str]) -> list[str]:
    with database.engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT id::text FROM sessions WHERE id::text = ANY(:ids)"), {"ids": ids}
            ).scalars()
        )
