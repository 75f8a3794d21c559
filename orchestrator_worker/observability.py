"""The worker's logs and metrics, wired through Celery's signals.

- Logging: Celery's `setup_logging` signal hands the worker's and beat's logging to
  `shared.logs.configure_logging` (JSON lines at the `--loglevel` the Procfile sets from
  LOG_LEVEL).
- Each job runs with `job`, `job_id` (the Celery task id) and, when an API request or
  another job sent it, that `request_id` bound to every line it logs.
- Metrics: with WORKER_METRICS_PORT set (the Procfile sets 9808), the worker's main
  process serves /metrics on that port, summing what its prefork children counted
  (Prometheus multiprocess mode; `prepare` must run before prometheus_client is imported,
  so this module imports shared.metrics only inside the handlers).
"""

from __future__ import annotations

import logging
import sys
import time

from celery import signals

from shared import logs, metrics_dir
from shared.config import Settings

log = logging.getLogger(__name__)

_running: dict[str, tuple] = {}  # Celery task id -> (log binding, start time)


def prepare(settings: Settings) -> None:
    """Before the jobs are imported: the multiprocess directory, when metrics are served."""
    if settings.worker_metrics_port is None:
        return
    if "shared.metrics" in sys.modules:
        log.warning("shared.metrics was imported before the worker set up its metrics")
    metrics_dir.ensure_dir()


def install(settings: Settings) -> None:
    """Connect the handlers (once, from the Celery app's module)."""

    @signals.setup_logging.connect(weak=False)
    def _configure_logging(loglevel=None, **_kwargs) -> None:
        logs.configure_logging(settings, level=loglevel or None)

    signals.task_prerun.connect(_job_started, weak=False)
    signals.task_postrun.connect(_job_finished, weak=False)

    @signals.worker_ready.connect(weak=False)
    def _serve(**_kwargs) -> None:
        _serve_metrics(settings.worker_metrics_port)


def _job_started(task_id=None, task=None, **_kwargs) -> None:
    fields = {"job": task.name, "job_id": task_id}
    request_id = task.request.get("request_id")  # the header of the sender (API or job)
    if request_id:
        fields["request_id"] = request_id
    _running[task_id] = (logs.bind(**fields), time.perf_counter())


def _job_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    from shared import metrics

    binding, started = _running.pop(task_id, (None, None))
    if started is not None:
        metrics.JOB_DURATION.labels(task.name).observe(time.perf_counter() - started)
    metrics.JOBS.labels(task.name, state or "UNKNOWN").inc()
    if binding is not None:
        logs.unbind(binding)


def _serve_metrics(port: int | None) -> None:
    if port is None:
        return
    from prometheus_client import start_http_server

    from shared import metrics

    try:
        start_http_server(port, registry=metrics.registry())
    except OSError as exc:
        log.error("worker metrics not served on port %d: %s", port, exc)
        return
    log.info("worker metrics on :%d/metrics", port, extra={"port": port})
