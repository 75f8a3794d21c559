"""One settings object built from the environment (CONTRACT section 11)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

DEVELOPMENT_SECRET_KEY = "orchestrator-development-key-not-secret-0123456789"
RATE_LIMIT_PATTERN = re.compile(
    r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE
)
LOG_LEVELS = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}
# RATE_LIMIT when it is not set and ORCHESTRATOR_ENV is development (production: 60/minute).
DEVELOPMENT_RATE_LIMIT = "1200/minute"
# The longest lifetime (exp - iat) of a token the API accepts: the 30 days of the tokens
# that registrations hand to agents, and a day of margin (shared/tokens.py).
DEFAULT_TOKEN_MAX_TTL_SECONDS = 31 * 24 * 3600


class ConfigError(ValueError):
    """A variable of the environment has a value the process cannot run with."""


def _between(convert: Callable[[str], Any], noun: str, low, high) -> Callable[[str], Any]:
    def parse(raw: str):
        try:
            value = convert(raw.strip())
        except ValueError:
            raise ValueError(f"must be {noun}, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low!s} and {high!s}, got {value!s}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    return _between(int, "an integer", low, high)


def _float_between(low: float, high: float) -> Callable[[str], float]:
    return _between(_Number, "a number", _Number(low), _Number(high))


class _Number(float):
    """A float that prints as 0.5 or 60, not 60.0."""

    def __str__(self) -> str:
        return f"{float(self):g}"


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(sorted(LOG_LEVELS))}, got {raw!r}")
    return value


def _rate_limit(raw: str) -> str:
    if not RATE_LIMIT_PATTERN.match(raw):
        raise ValueError(f"must look like '60/minute', got {raw!r}")
    return raw.strip()


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value.split("://", 1)[0].split("+", 1)[0] not in schemes or "://" not in value:
            raise ValueError(f"must be a {'/'.join(schemes)}:// URL")
        return value

    return parse


def _text(raw: str) -> str:
    return raw


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"must be true or false, got {raw!r}")
    return value in ("true", "1", "yes")


ORIGIN_PATTERN = re.compile(r"^https?://[^/\s:]+(:\d{1,5})?$")


def _origins(raw: str) -> str:
    """Comma-separated browser origins (scheme://host[:port], no path), or `*`."""
    origins = [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    for origin in origins:
        if origin != "*" and not ORIGIN_PATTERN.match(origin):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com:3000")
    return ",".join(origins)


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://localhost/orchestrator"
    # The one connection per process that LISTENs for the event path's notifications
    # (shared/notify.py) keeps session state, so it goes to PostgreSQL directly, past any
    # pooler in transaction mode; empty: DATABASE_URL.
    database_listen_url: str = ""
    # The heartbeat statement is PREPAREd once per connection unless a pooler in
    # transaction mode (PgBouncer) stands in between: auto finds out per connection.
    database_prepared_statements: str = "auto"
    # Connections each process keeps (and opens beyond, at most) per engine; unset: its
    # kind's default (shared/db.py: web and gateway 10 + 20, worker children 5 + 20).
    db_pool_size: int | None = None
    db_max_overflow: int | None = None
    redis_url: str = "redis://localhost:6379/0"
    # Celery's broker; empty: REDIS_URL. RabbitMQ (amqp://) works too: Redis still carries
    # the events, rate limits and WebSocket leases.
    celery_broker_url: str = ""
    api_secret_key: str | None = None
    log_level: str = "INFO"
    orchestrator_env: str = "development"
    rate_limit: str = "60/minute"
    # Registrations per window by one registration token (an agent token without agent_id):
    # each registration mints an agent with a RATE_LIMIT of its own. Admins and operators,
    # who may act on every agent anyway, have only RATE_LIMIT.
    agent_registration_limit: str = "10/minute"
    # Task log appends (POST /tasks/{id}/logs) per agent: a budget of their own, so a
    # command's chatter never spends the RATE_LIMIT its agent needs for heartbeats and
    # moves (a runner sends at most 4 batches a second per running task).
    task_log_rate_limit: str = "1200/minute"
    token_max_ttl_seconds: int = DEFAULT_TOKEN_MAX_TTL_SECONDS
    ws_max_connections_per_client: int = 5
    # Open WebSockets per web process, at most: each holds a request thread of its own
    # (gunicorn.conf.py adds this many threads to WEB_THREADS, which stay for HTTP).
    ws_max_connections_per_process: int = 1000
    # How long a WebSocket client may take nothing before it is dropped, and how often
    # the server pings it.
    ws_send_timeout_seconds: float = 10.0
    ws_ping_interval_seconds: float = 20.0
    # gunicorn (gunicorn.conf.py): processes, HTTP threads each, one access log line per
    # request.
    web_concurrency: int = 2
    web_threads: int = 16
    # The WebSocket gateway (gunicorn_gateway.conf.py, gevent): processes, and open sockets
    # each at most (it stands in for WS_MAX_CONNECTIONS_PER_PROCESS there).
    gateway_concurrency: int = 1
    gateway_max_connections: int = 20_000
    access_log: bool = False
    # The Celery worker's own /metrics port (none: not served), and beat's schedule file
    # (empty: one of this stack's own in the temporary directory).
    worker_metrics_port: int | None = None
    celery_beat_schedule: str = ""
    heartbeat_timeout_seconds: int = 30
    # agent.heartbeat is recorded when an agent's status or current_load changes, else at
    # most once per this many seconds per agent.
    heartbeat_event_interval_seconds: int = 30
    task_max_attempts: int = 3
    task_timeout_seconds: int = 3600
    task_start_timeout_seconds: int = 120
    system_event_interval_seconds: int = 5
    event_retention: int = 10000
    sweep_interval_seconds: int = 5
    port: int = 8000
    flower_port: int = 5555
    # Where users reach Flower (behind a proxy); empty: FLOWER_PORT on the page's host.
    flower_url: str = ""
    # Browser origins allowed to call the API (comma-separated, or *); none by default.
    cors_origins: str = ""
    # A task's log: bytes of text kept (then one truncation marker), and how long after
    # the task finished it is kept.
    task_log_max_bytes: int = 1024 * 1024
    task_log_retention_seconds: int = 7 * 24 * 3600
    # Webhooks (docs/API.md, "Webhooks"). Private, loopback and link-local receivers are
    # refused in production unless this is true.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    # Retries: base x 2^(attempt-1), with jitter, at most max_delay apart, for window seconds.
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_delay_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 86_400.0
    webhook_disable_after_failures: int = 20
    # A delivery whose job has not run this long after it was sent gets another job.
    webhook_redispatch_seconds: float = 60.0
    # Deliveries in flight to one webhook at most, so a slow receiver holds only that
    # many of the webhooks worker's threads.
    webhook_max_in_flight: int = 4
    # How long a finished delivery stays in a webhook's delivery log.
    webhook_delivery_retention_seconds: int = 7 * 24 * 3600

    @property
    def is_production(self) -> bool:
        return self.orchestrator_env == "production"

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def secret_key(self) -> str:
        return self.api_secret_key or DEVELOPMENT_SECRET_KEY

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url[len("postgresql://") :]
        return url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; raise ConfigError naming the first bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.name.upper()
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[field.name] = PARSERS[field.name](raw)
            except ValueError as exc:
                raise ConfigError(f"{name} {exc}") from None
        if "rate_limit" not in values and values.get("orchestrator_env") != "production":
            # 60/minute is the production default; a lone developer exploring with curl,
            # the dashboard and `orchestrator demo` from one address would hit it at once.
            values["rate_limit"] = DEVELOPMENT_RATE_LIMIT
        settings = cls(**values)
        if settings.is_production and len(settings.api_secret_key or "") < 32:
            raise ConfigError(
                "API_SECRET_KEY must be set to at least 32 characters when "
                "ORCHESTRATOR_ENV=production"
            )
        if settings.is_production and settings.api_secret_key == DEVELOPMENT_SECRET_KEY:
            raise ConfigError(
                "API_SECRET_KEY must not be the public development key when "
                "ORCHESTRATOR_ENV=production"
            )
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        return Settings(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _url("postgresql", "postgres"),
    "database_listen_url": _url("postgresql", "postgres"),
    "database_prepared_statements": _one_of("auto", "true", "false"),
    "db_pool_size": _int_between(1, 10_000),
    "db_max_overflow": _int_between(0, 10_000),
    "redis_url": _url("redis", "rediss", "unix"),
    "celery_broker_url": _url("redis", "rediss", "amqp", "amqps", "pyamqp"),
    "api_secret_key": _text,
    "log_level": _log_level,
    "orchestrator_env": _one_of("development", "production"),
    "rate_limit": _rate_limit,
    "agent_registration_limit": _rate_limit,
    "task_log_rate_limit": _rate_limit,
    "token_max_ttl_seconds": _int_between(300, 366 * 24 * 3600),
    "ws_max_connections_per_client": _int_between(1, 10_000),
    "ws_max_connections_per_process": _int_between(1, 100_000),
    "ws_send_timeout_seconds": _float_between(0.1, 3_600),
    "ws_ping_interval_seconds": _float_between(0.1, 3_600),
    "web_concurrency": _int_between(1, 256),
    "web_threads": _int_between(1, 10_000),
    "gateway_concurrency": _int_between(1, 256),
    "gateway_max_connections": _int_between(1, 1_000_000),
    "access_log": _bool,
    "worker_metrics_port": _int_between(1, 65_535),
    "celery_beat_schedule": _text,
    "heartbeat_timeout_seconds": _int_between(1, 86_400),
    "heartbeat_event_interval_seconds": _int_between(0, 86_400),
    "task_max_attempts": _int_between(1, 100),
    "task_timeout_seconds": _int_between(1, 86_400),
    "task_start_timeout_seconds": _int_between(1, 86_400),
    "system_event_interval_seconds": _int_between(1, 3_600),
    "event_retention": _int_between(100, 10_000_000),
    "sweep_interval_seconds": _int_between(1, 3_600),
    "port": _int_between(1, 65_535),
    "flower_port": _int_between(1, 65_535),
    "flower_url": _url("http", "https"),
    "cors_origins": _origins,
    "task_log_max_bytes": _int_between(1024, 1024**3),
    "task_log_retention_seconds": _int_between(60, 366 * 24 * 3600),
    "webhook_allow_private": _bool,
    "webhook_timeout_seconds": _float_between(0.1, 60),
    "webhook_retry_base_seconds": _float_between(0.01, 3_600),
    "webhook_retry_max_delay_seconds": _float_between(0.01, 86_400),
    "webhook_retry_window_seconds": _float_between(1, 7 * 86_400),
    "webhook_disable_after_failures": _int_between(1, 10_000),
    "webhook_redispatch_seconds": _float_between(0.5, 86_400),
    "webhook_max_in_flight": _int_between(1, 1_000),
    "webhook_delivery_retention_seconds": _int_between(60, 366 * 24 * 3600),
}


def load_settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For process entry points: a bad variable stops the process with one line."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        print(f"orchestrator: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
