"""GET /metrics: Prometheus text format, open like /health (no token, no rate limit).

Under gunicorn every worker writes its counters to PROMETHEUS_MULTIPROC_DIR and whichever
worker answers the scrape sums them all (gunicorn.conf.py sets the directory up). The
gauges of tasks, agents and the Celery queue are read at scrape time (shared/metrics.py).
"""

from __future__ import annotations

from functools import partial

from amqp.exceptions import ChannelError
from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import metrics

blp = Blueprint("metrics", __name__)


def queue_length(celery, queue: str) -> int:
    """Jobs waiting in `queue`, asked of the broker (a passive declare: LLEN on Redis,
    the queue's message count on RabbitMQ)."""
    with celery.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError as exc:
            if "NOT_FOUND" in str(exc):  # never declared, or an empty Redis list: none wait
                return 0
            raise
        return declared.message_count


@blp.get("/metrics")
def scrape() -> Response:
    ext = current_app.extensions["orchestrator"]
    collector = metrics.StateCollector(ext.database, partial(queue_length, ext.celery))
    registry = metrics.registry(collector)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def register(app: Flask) -> None:
    app.register_blueprint(blp)
