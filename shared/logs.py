"""Structured logs: one JSON object per line on stderr, for every process.

`configure_logging(settings)` is the one place that sets logging up: the API (create_app),
gunicorn's master (gunicorn.conf.py) and the Celery worker and beat (the `setup_logging`
signal) all call it. Each line carries `timestamp`, `level`, `logger`, `message`, the
fields passed with `extra=`, and the fields bound to the running request or job with
`bind` (`request_id`; `job`, `job_id`), which is how the request id of an API call shows
up in the lines of the jobs it caused.

Secrets never reach a line: the API key, bearer tokens, JWTs and the password of a URL
are replaced with `[REDACTED]` in the formatted line, whatever logged them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from shared.config import DEVELOPMENT_SECRET_KEY, Settings

REDACTED = "[REDACTED]"
_PATTERNS = (
    # a JWT: three base64url parts, the first two JSON objects ("eyJ" is '{"')
    (re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1" + REDACTED),
    # the password of a URL: scheme://user:password@host
    (re.compile(r"(\w+://[^:/@\s\"]*:)[^@\s\"]+@"), r"\1" + REDACTED + "@"),
)

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "orchestrator_log_context", default=MappingProxyType({})
)


def bind(**fields: Any) -> contextvars.Token:
    """Add `fields` to every line logged from this thread (or task) until `unbind`."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token) -> None:
    try:
        _context.reset(token)
    except ValueError:  # made in another context: forget everything instead
        _context.set(MappingProxyType({}))


def bound() -> Mapping[str, Any]:
    """The fields bound now (the request id of the running request, for example)."""
    return _context.get()


def job_headers() -> dict[str, str]:
    """Headers for a Celery job sent now: the request id it descends from, if any (the
    worker binds it again while the job runs, so a request's jobs, and their jobs, log it)."""
    request_id = _context.get().get("request_id")
    return {"request_id": request_id} if request_id else {}


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger's formatter with a UTC timestamp first and secrets redacted."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
        # each secret as written and as it appears inside a JSON string
        self.secrets = sorted(
            {s for secret in secrets if secret for s in (secret, json.dumps(secret)[1:-1])},
            key=len,
            reverse=True,
        )

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        fields = dict(log_data)
        log_data.clear()
        log_data["timestamp"] = (
            datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        log_data.update(fields)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))

    def redact(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        # the patterns only where their fixed part occurs (a third of a request line's cost)
        if "eyJ" in line or "://" in line or "bearer" in line.lower():
            for pattern, replacement in _PATTERNS:
                line = pattern.sub(replacement, line)
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (test runners swap it), like lastResort."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _with_context(factory):
    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        for key, value in _context.get().items():
            setattr(record, key, value)
        return record

    make_record.orchestrator_context = True
    return make_record


# Jobs that beat sends on a schedule: Celery's own lines about them ("Sending due task",
# "Task ... received", "Task ... succeeded") are routine, so they are DEBUG, and an idle
# stack's INFO log stays quiet. What a job finds to do, it logs itself.
ROUTINE_JOBS = (
    "orchestrator.publish_events",
    "orchestrator.assign_ready_tasks",
    "orchestrator.expire_heartbeats",
    "orchestrator.time_out_tasks",
    "orchestrator.reconcile",
    "orchestrator.sweep_webhook_deliveries",
)
_CELERY_CHATTER = ("celery.beat", "celery.app.trace", "celery.worker.strategy")


class RoutineJobsAtDebug(logging.Filter):
    """Celery's INFO lines about a routine job become DEBUG lines (dropped below DEBUG)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith(_CELERY_CHATTER):
            return True
        message = record.getMessage()
        if not any(job in message for job in ROUTINE_JOBS):
            return True
        if self.level > logging.DEBUG:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def configure_logging(settings: Settings, level: int | str | None = None) -> logging.Handler:
    """JSON lines at LOG_LEVEL (or `level`) on the root logger. Safe to call again: the
    handler it installed before is replaced, other handlers (a test's) are left alone."""
    level = level if level is not None else settings.log_level
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "orchestrator", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.orchestrator = True
    handler.setLevel(level)
    handler.addFilter(RoutineJobsAtDebug(level))
    handler.setFormatter(JsonFormatter(secrets=(settings.api_secret_key, DEVELOPMENT_SECRET_KEY)))
    root.addHandler(handler)
    root.setLevel(level)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "orchestrator_context", False):
        logging.setLogRecordFactory(_with_context(factory))
    return handler
