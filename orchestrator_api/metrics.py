"""GET /metrics: Prometheus text format, open like /health (no token, no rate limit).

Under gunicorn every worker writes its counters to PROMETHEUS_MULTIPROC_DIR and whichever
worker answers the scrape sums them all (gunicorn.conf.py sets the directory up). The
gauges of tasks, agents and the Celery queue are read at scrape time (shared/metrics.py).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import metrics

blp = Blueprint("metrics", __name__)


@blp.get("/metrics")
def scrape() -> Response:
    ext = current_app.extensions["orchestrator"]
    registry = metrics.registry(metrics.StateCollector(ext.database, ext.redis))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def register(app: Flask) -> None:
    app.register_blueprint(blp)
