"""One JSON log line and the HTTP metrics for every request.

The hooks are registered before any other, so the request id is bound (shared/logs.py)
for everything the request logs and every job it sends, and the line is written after
every other after_request hook, with the status the client gets. Probes (/health, /ready,
/metrics) are counted but not logged. Nothing secret is logged: the path is logged without
its query string (a WebSocket may carry `?token=`), and no header is.
"""

from __future__ import annotations

import functools
import logging
import re
import time

from flask import Flask, Response, g, request

from orchestrator_api.errors import request_id
from shared import logs, metrics

log = logging.getLogger("orchestrator_api.requests")

QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404s: the label must not take every path anyone tries
# A rule's converters left out of the label: /sessions/<id(statistics):session_id> is
# /sessions/<session_id>, as in the OpenAPI paths.
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


@functools.cache
def _route_label(rule: str) -> str:
    return _CONVERTER.sub(r"<\1>", rule)


def _start() -> None:
    g.started_at = time.perf_counter()
    g.log_binding = logs.bind(request_id=request_id())


def _finish(response: Response) -> Response:
    started = g.get("started_at")
    duration = time.perf_counter() - started if started is not None else 0.0
    rule = request.url_rule
    route = _route_label(rule.rule) if rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in METHODS else "OTHER"
    status = response.status_code
    websocket = rule is not None and rule.websocket
    if websocket and status == 200:
        status = 101  # the stream ran until now: a connection's lifetime is no latency
    metrics.observe_request(method, route, status, None if websocket else duration)
    if request.path not in QUIET_PATHS:
        log.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            duration * 1000,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
            },
        )
    return response


def _unbind(_exc: BaseException | None) -> None:
    binding = g.pop("log_binding", None)
    if binding is not None:
        logs.unbind(binding)


def register(app: Flask) -> None:
    """Call before the other hooks are registered (see the module's docstring)."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_unbind)
