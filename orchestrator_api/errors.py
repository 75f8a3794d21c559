"""Every error becomes the contract's JSON body (CONTRACT section 6), in one place."""

from __future__ import annotations

import http
import logging
import re
import uuid

from apispec import BasePlugin
from flask import Flask, Response, g, jsonify, request
from psycopg2 import errors as pg_errors
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.errors import OrchestratorError

log = logging.getLogger(__name__)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "VALIDATION_ERROR",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}
MESSAGES = {
    404: "The requested URL was not found",
    405: "The method is not allowed for the requested URL",
    413: "The request body is larger than 1 MiB",
}


class ErrorResponsesPlugin(BasePlugin):
    """OpenAPI: on every /api/v1 operation, the error answers it can give (CONTRACT
    section 6), each with the error body; no catch-all `default`, so the spec lists them.
    401, 403 and 429 come with the bearer scheme (auth.BearerAuthPlugin)."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        if not path or not path.startswith("/api/v1"):
            return
        for method, operation in (operations or {}).items():
            statuses = [400, 500, 503]  # bad input or id; unhandled; database or no agent
            if "{" in path or method != "get":
                statuses.append(404)  # the object in the path, or one the body names
            if method != "get":
                statuses.append(409)  # a conflict, or a concurrent change got there first
            if method in ("post", "put", "patch"):
                statuses.append(413)  # a body over 1 MiB
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(str(status), http.HTTPStatus(status).name)


def request_id() -> str:
    rid = getattr(g, "request_id", None)
    if rid is None:
        supplied = request.headers.get("X-Request-ID", "")
        rid = supplied if REQUEST_ID_PATTERN.match(supplied) else uuid.uuid4().hex
        g.request_id = rid
    return rid


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict | None = None,
    headers=None,
    *,
    beside: dict | None = None,
) -> Response:
    """The contract's error body; `beside`: fields next to `error` (as /ready's checks)."""
    body: dict = {"code": code, "message": message, "request_id": request_id()}
    if details:
        body["details"] = details
    response = jsonify({**(beside or {}), "error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation_details(exc: HTTPException) -> dict | None:
    messages = (getattr(exc, "data", None) or {}).get("messages")
    if not isinstance(messages, dict):
        return None
    if len(messages) == 1:  # webargs nests by location: {"json": {...}}
        (inner,) = messages.values()
        if isinstance(inner, dict):
            return inner
    return messages


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return handle_unexpected(exc)
    code = HTTP_CODES.get(status, "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR")
    status = 400 if status in (415, 422) else status
    details = _validation_details(exc)
    if status == 400:
        message = "Invalid input" if details else (exc.description or "Bad request")
    else:
        message = MESSAGES.get(status) or exc.description or exc.name
    headers = dict(exc.get_response().headers) if status in (405, 429) else {}
    headers.pop("Content-Type", None)
    headers.pop("Content-Length", None)
    return error_response(status, code, message, details, headers)


def handle_domain_error(exc: OrchestratorError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.details)


def handle_database_error(exc: DBAPIError) -> Response:
    if isinstance(exc.orig, pg_errors.TransactionRollbackError):
        log.warning("concurrent update refused: %s", exc.orig.__class__.__name__)
        return error_response(409, "CONFLICT", "A concurrent change got there first; retry")
    if isinstance(exc, IntegrityError):  # at a flush in the view, as at the commit
        log.warning("change refused by a constraint: %s", exc.orig.__class__.__name__)
        return error_response(409, "CONFLICT", "The change conflicts with existing data")
    if isinstance(exc, OperationalError):
        log.error("database unavailable: %s", exc.orig)
        return error_response(
            503, "SERVICE_UNAVAILABLE", "The database is unavailable", headers={"Retry-After": "5"}
        )
    return handle_unexpected(exc)


def handle_pool_exhausted(exc: PoolTimeout) -> Response:
    """Every connection of this process's pool (DB_POOL_SIZE + DB_MAX_OVERFLOW) stayed
    busy for the pool's whole wait: the database is there, this process is saturated."""
    log.error("no database connection free in time: %s", exc)
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        "Every database connection of this server is busy; retry",
        headers={"Retry-After": "1"},
    )


def handle_unexpected(exc: Exception) -> Response:
    log.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.path,
        request_id(),
        exc_info=exc,
    )
    return error_response(500, "INTERNAL_ERROR", "An internal error occurred")


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OrchestratorError, handle_domain_error)
    # DBAPIError: orchestrator_api/database.py, which may run the request again first
    app.register_error_handler(PoolTimeout, handle_pool_exhausted)
    app.register_error_handler(Exception, handle_unexpected)
