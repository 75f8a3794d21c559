"""Every Prometheus metric of the orchestrator, in one place.

Counters and histograms are updated where the work happens: the API's request hook, the
WebSocket hub, the relays, the Celery jobs (from the numbers the services return: the
services themselves know nothing of Prometheus). The state of the system (tasks and
agents by status, the Celery queue's length) is not counted at all: `StateCollector`
reads it from PostgreSQL and Redis when /metrics is scraped, so it costs nothing between
scrapes and is the same whichever process answers.

Under gunicorn and the prefork Celery worker, PROMETHEUS_MULTIPROC_DIR is set before this
module is imported (shared/metrics_dir.py) and `registry()` sums the files of every process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select, text

from shared import metrics_dir
from shared.db import Database
from shared.enums import AgentStatus, TaskStatus
from shared.models import Agent, Task, WorkSession
from shared.states import UNFINISHED_TASK_STATUSES

log = logging.getLogger(__name__)

CELERY_QUEUE = "celery"  # the default queue every job goes to
SCRAPE_STATEMENT_TIMEOUT_MS = 5000

HTTP_REQUESTS = Counter(
    "orchestrator_http_requests_total",
    "HTTP requests answered, by method, route (the URL rule, not the path) and status",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "orchestrator_http_request_duration_seconds",
    "Time to answer an HTTP request (WebSocket streams excluded), by method, route and status",
    ["method", "route", "status"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "orchestrator_websocket_connections",
    "Open WebSocket streams (subscriptions of the web processes' hubs)",
    multiprocess_mode="livesum",
)
EVENTS_PUBLISHED = Counter(
    "orchestrator_events_published_total",
    "Outbox events published (given their event id and sent to the stream) by a relay",
)
ASSIGNMENT_LATENCY = Histogram(
    "orchestrator_assignment_latency_seconds",
    "From a task's creation to its assignment; attempt is first, or retry for a task "
    "assigned again after a release or a retryable failure",
    ["attempt"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, float("inf")),
)
HEARTBEAT_EXPIRIES = Counter(
    "orchestrator_heartbeat_expiries_total",
    "Agents marked OFFLINE by the sweep because their heartbeat expired",
)
SWEEP_REPAIRS = Counter(
    "orchestrator_sweep_repairs_total",
    "Rows the sweeps repaired, by kind of repair",
    ["repair"],
)
JOBS = Counter(
    "orchestrator_jobs_total",
    "Celery jobs run by this worker, by job name and final state",
    ["job", "state"],
)
JOB_DURATION = Histogram(
    "orchestrator_job_duration_seconds",
    "Run time of the Celery jobs, by job name",
    ["job"],
)


def observe_request(method: str, route: str, status: int, seconds: float | None) -> None:
    labels = (method, route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    if seconds is not None:
        HTTP_REQUEST_DURATION.labels(*labels).observe(seconds)


def observe_assignments(times: Iterable[tuple[datetime, datetime, int]]) -> None:
    """Call after the assigning transaction committed."""
    for created_at, assigned_at, attempts in times:
        seconds = max((assigned_at - created_at).total_seconds(), 0.0)
        ASSIGNMENT_LATENCY.labels("first" if attempts == 0 else "retry").observe(seconds)


class StateCollector:
    """Gauges computed at scrape time: tasks and agents by status (one GROUP BY each)
    and the number of jobs waiting in the Celery queue (`queue_length`, which asks the
    broker). A source that does not answer is reported by `orchestrator_metrics_source_up`
    instead of failing the scrape."""

    def __init__(
        self,
        database: Database,
        queue_length: Callable[[str], int],
        queue: str = CELERY_QUEUE,
    ):
        self.database = database
        self.queue_length = queue_length
        self.queue = queue

    def describe(self):
        return []  # registering must not query anything

    def collect(self):
        up = GaugeMetricFamily(
            "orchestrator_metrics_source_up",
            "1 when the source of the scrape-time gauges answered this scrape",
            labels=["source"],
        )
        try:
            yield from self._from_database()
            up.add_metric(["database"], 1)
        except Exception as exc:
            log.warning("metrics: database unavailable: %s", exc.__class__.__name__)
            up.add_metric(["database"], 0)
        try:
            length = self.queue_length(self.queue)
            queue = GaugeMetricFamily(
                "orchestrator_celery_queue_length",
                "Jobs waiting in the Celery queue (asked of the broker: Redis or RabbitMQ)",
                labels=["queue"],
            )
            queue.add_metric([self.queue], length)
            yield queue
            up.add_metric(["broker"], 1)
        except Exception as exc:  # whatever the transport raises: the scrape goes on
            log.warning("metrics: broker unavailable: %s", exc.__class__.__name__)
            up.add_metric(["broker"], 0)
        yield up

    def _from_database(self):
        families = []
        with self.database.engine.connect() as connection:
            connection.execute(text(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}"))
            for name, model, statuses in (
                ("orchestrator_tasks", Task, TaskStatus),
                ("orchestrator_agents", Agent, AgentStatus),
            ):
                counts = {s.value: 0 for s in statuses}
                query = select(model.status, func.count()).group_by(model.status)
                if model is Agent:  # a deregistered agent is a record, not a member
                    query = query.where(Agent.deregistered_at.is_(None))
                rows = connection.execute(query).all()
                counts.update({str(status): count for status, count in rows})
                family = GaugeMetricFamily(
                    name, f"{model.__tablename__.capitalize()} by status", labels=["status"]
                )
                for status, count in counts.items():
                    family.add_metric([status], count)
                families.append(family)
            families += self._by_pool(connection)
            connection.rollback()
        return families

    def _by_pool(self, connection) -> list[GaugeMetricFamily]:
        """Per pool: unfinished tasks by status (PENDING is the pool's queue), read through
        the status index so the cost follows the live work, and live agents by status."""
        tasks = GaugeMetricFamily(
            "orchestrator_pool_tasks",
            "Unfinished tasks by pool (their session's) and status; PENDING is the queue",
            labels=["pool", "status"],
        )
        rows = connection.execute(
            select(WorkSession.pool, Task.status, func.count())
            .join(WorkSession, WorkSession.id == Task.session_id)
            .where(Task.status.in_(sorted(UNFINISHED_TASK_STATUSES)))
            .group_by(WorkSession.pool, Task.status)
        ).all()
        counts: dict[str, dict[str, int]] = {}
        for pool, status, count in rows:
            counts.setdefault(pool, dict.fromkeys(sorted(UNFINISHED_TASK_STATUSES), 0))
            counts[pool][str(status)] = count
        for pool, by_status in sorted(counts.items()):
            for status, count in by_status.items():
                tasks.add_metric([pool, status], count)
        agents = GaugeMetricFamily(
            "orchestrator_pool_agents",
            "Live (not deregistered) agents by pool and status",
            labels=["pool", "status"],
        )
        rows = connection.execute(
            select(Agent.pool, Agent.status, func.count())
            .where(Agent.deregistered_at.is_(None))
            .group_by(Agent.pool, Agent.status)
        ).all()
        for pool, status, count in sorted(rows):
            agents.add_metric([pool, str(status)], count)
        return [tasks, agents]


class _DefaultRegistry:
    """This process's own metrics, when there is one process (no multiprocess dir)."""

    def collect(self):
        return REGISTRY.collect()


def registry(*collectors) -> CollectorRegistry:
    """What /metrics serves: the metrics of every process sharing the multiprocess dir (or
    of this process alone), plus `collectors`."""
    scrape = CollectorRegistry()
    if metrics_dir.in_use():
        MultiProcessCollector(scrape)
    else:
        scrape.register(_DefaultRegistry())
    for collector in collectors:
        scrape.register(collector)
    return scrape
