"""RATE_LIMIT per client on /api/v1, counted in Redis (CONTRACT section 8).

One budget per client across every /api/v1 route (an application-wide limit, not one per
route): the client is `auth.client_key` (an agent token's agent, else the verified token's
`sub`, else the remote address). A fixed window that opens at the client's first request:
one INCR per request, the same count in every gunicorn worker and host. Everything outside
/api/v1 (/health, /ready, /metrics, /openapi.json, /docs) is exempt.

Every registration mints an agent with a budget of its own, so registrations by a
registration token (an agent token without agent_id) also count against
AGENT_REGISTRATION_LIMIT, that token's own; admins and operators, who may act on every
agent anyway, have only RATE_LIMIT.

Redis down: requests are still served; each process counts in memory meanwhile (so the
limits hold per process, not across them), logs it once, and goes back to Redis when it
answers again. Nothing fails because the counter is unreachable.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limit, Limiter

from orchestrator_api import auth
from shared.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "orchestrator"
STORAGE_TIMEOUT_SECONDS = 1
REGISTRATION_SCOPE = "agent-registration"
TASK_LOG_SCOPE = "task-log-appends"
TASK_LOG_APPEND_ENDPOINT = "task_logs.TaskLogs"


def client_key() -> str:
    return auth.client_key(auth.resolve_principal())


def _exempt() -> bool:
    return not auth.is_api_path(request.path)


def _a_log_append() -> bool:
    return request.endpoint == TASK_LOG_APPEND_ENDPOINT and request.method == "POST"


def _not_a_log_append() -> bool:
    return not _a_log_append()


def _not_a_token_registration() -> bool:
    """Exempt from AGENT_REGISTRATION_LIMIT: all but a registration by a registration
    token (a bad token is refused, 401, and counts against its address's RATE_LIMIT)."""
    if request.endpoint != auth.REGISTER_ENDPOINT or request.method != "POST":
        return True
    principal = auth.resolve_principal()
    return principal is None or principal.role != "agent" or principal.agent_id is not None


def make_limiter(settings: Settings) -> Limiter:
    everything_else = {
        "limit_provider": settings.rate_limit,
        "key_function": client_key,
        "scope": "global",
        "exempt_when": _a_log_append,
        "error_message": f"Rate limit exceeded ({settings.rate_limit} per client); "
        "retry after the seconds in Retry-After",
    }
    log_appends = {
        "limit_provider": settings.task_log_rate_limit,
        "key_function": client_key,
        "scope": TASK_LOG_SCOPE,
        "exempt_when": _not_a_log_append,
        "error_message": f"Task log limit exceeded ({settings.task_log_rate_limit} per "
        "agent); retry after the seconds in Retry-After",
    }
    registrations = {
        "limit_provider": settings.agent_registration_limit,
        "key_function": client_key,
        "scope": REGISTRATION_SCOPE,
        "exempt_when": _not_a_token_registration,
        "error_message": f"Agent registration limit exceeded "
        f"({settings.agent_registration_limit} per registration token); "
        "retry after the seconds in Retry-After",
    }
    limiter = Limiter(
        key_func=client_key,
        application_limits=[
            ApplicationLimit(**everything_else),
            ApplicationLimit(**registrations),
            ApplicationLimit(**log_appends),
        ],
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
        # in memory, as in Redis: one budget per client over all routes, and the bound
        # on registrations
        in_memory_fallback=[
            Limit(**everything_else, shared=True),
            Limit(**registrations, shared=True),
            Limit(**log_appends, shared=True),
        ],
        # unknown /api/v1 paths count too (flask-limiter skips requests without endpoint)
        request_identifier=lambda: request.endpoint or "unrouted",
    )
    limiter.request_filter(_exempt)
    return limiter


class _HitCounts:
    """Each request's counter values, taken from the hits themselves (by counter: a
    registration hits two), and each window's end, asked of Redis once per window and
    process: the headers cost no extra round trip."""

    def __init__(self, storage) -> None:
        self.local = threading.local()
        self.window_ends: dict[str, float] = {}
        incr = storage.incr

        def counting_incr(key, *args, **kwargs):
            value = incr(key, *args, **kwargs)
            hits = getattr(self.local, "hits", None)
            if hits is None:
                hits = self.local.hits = {}
            hits[key] = value
            return value

        storage.incr = counting_incr
        self.storage = storage

    def forget(self) -> None:
        self.local.hits = None

    def window(self, current) -> tuple[float, int] | None:
        """The window's end and what remains of the limit the headers show."""
        count = (getattr(self.local, "hits", None) or {}).get(current.key)
        if count is None:
            return None
        now = time.time()
        window_end = self.window_ends.get(current.key, 0.0)
        if window_end <= now:
            window_end = self.storage.get_expiry(current.key)
            if len(self.window_ends) > 100_000:
                self.window_ends.clear()
            self.window_ends[current.key] = window_end
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
