"""RATE_LIMIT per client on /api/v1, counted in Redis (CONTRACT section 8).

One budget per client across every /api/v1 route (an application-wide limit, not one per
route): the client is the verified token's `sub`, else the remote address. A fixed window
that opens at the client's first request: one INCR per request, the same count in every
gunicorn worker and host. Everything outside /api/v1 (/health, /ready, /metrics,
/openapi.json, /docs) is exempt.

Redis down: requests are still served; each process counts in memory meanwhile (so the
limit holds per process, not across them), logs it once, and goes back to Redis when it
answers again. Nothing fails because the counter is unreachable.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter

from orchestrator_api import auth
from shared.config import Settings
from shared.errors import Unauthorized

log = logging.getLogger(__name__)

KEY_PREFIX = "orchestrator"
STORAGE_TIMEOUT_SECONDS = 1


def client_key() -> str:
    try:
        principal = auth.request_principal()
    except Unauthorized:
        principal = None  # a bad token counts against its address
    if principal is not None and principal.sub is not None:
        return f"sub:{principal.sub}"
    return f"addr:{request.remote_addr or 'unknown'}"


def _exempt() -> bool:
    return not auth.is_api_path(request.path)


def make_limiter(settings: Settings) -> Limiter:
    limit = ApplicationLimit(
        limit_provider=settings.rate_limit,
        error_message=f"Rate limit exceeded ({settings.rate_limit} per client); "
        "retry after the seconds in Retry-After",
    )
    limiter = Limiter(
        key_func=client_key,
        application_limits=[limit],
        strategy="fixed-window",
        storage_uri=settings.redis_url,
        storage_options={
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        },
        key_prefix=KEY_PREFIX,
        # the headers are written below: flask-limiter would put Retry-After on every
        # response and rewrite the one of a 503
        headers_enabled=False,
        swallow_errors=True,
        in_memory_fallback=[settings.rate_limit],
        # unknown /api/v1 paths count too (flask-limiter skips requests without endpoint)
        request_identifier=lambda: request.endpoint or "unrouted",
    )
    limiter.request_filter(_exempt)
    return limiter


class _HitCounts:
    """Each request's counter value, taken from the hit itself, and each window's end,
    asked of Redis once per window and process: the headers cost no extra round trip."""

    def __init__(self, storage) -> None:
        self.local = threading.local()
        self.window_ends: dict[str, float] = {}
        incr = storage.incr

        def counting_incr(key, *args, **kwargs):
            value = incr(key, *args, **kwargs)
            self.local.hit = (key, value)
            return value

        storage.incr = counting_incr
        self.storage = storage

    def forget(self) -> None:
        self.local.hit = None

    def window(self, current) -> tuple[float, int] | None:
        hit = getattr(self.local, "hit", None)
        if hit is None:
            return None
        key, count = hit
        now = time.time()
        window_end = self.window_ends.get(key, 0.0)
        if window_end <= now:
            window_end = self.storage.get_expiry(key)
            if len(self.window_ends) > 100_000:
                self.window_ends.clear()
            self.window_ends[key] = window_end
        return window_end, max(0, current.limit.amount - count)


def register(app: Flask, settings: Settings) -> Limiter:
    limiter = make_limiter(settings)
    limiter.init_app(app)
    counts = _HitCounts(limiter.storage)

    def add_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        try:
            reset_at, remaining = counts.window(current) or current.window
        except Exception as exc:  # the counter went away since the hit: no headers
            log.warning("rate limit headers left out: %s", exc.__class__.__name__)
            return response
        finally:
            counts.forget()
        response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(reset_at))  # epoch seconds
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
        return response

    app.after_request(add_headers)
    app.teardown_request(lambda _exc: counts.forget())  # the limiter's hit came before
    app.extensions["orchestrator_limiter"] = limiter
    return limiter
