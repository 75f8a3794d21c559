"""gunicorn's own refusals in the contract's error body (CONTRACT section 6).

gunicorn answers a request it cannot parse (a request line over `limit_request_line`,
headers over `limit_request_field_size` or `limit_request_fields`, a malformed line or
header) itself, before Flask sees it, with an HTML page. `JsonErrors.handle_error` writes
`{"error": {"code", "message", "request_id"}}` with an `X-Request-ID` instead, and a too
long request line is 414 (gunicorn says 400). The limits are in gunicorn.conf.py and
docs/API.md ("Request limits").

`worker_class = "orchestrator_api.gunicorn_worker.ThreadWorker"` in gunicorn.conf.py: the
gthread worker with these answers. `JsonErrors` mixes into any gunicorn worker class.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from ssl import SSLError

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import gthread

# The exceptions gunicorn answers as the client's fault (gunicorn/workers/base.py), less
# the ones given their own answer in `answer_for`.
BAD_REQUEST = (
    http_errors.InvalidRequestLine,
    http_errors.InvalidRequestMethod,
    http_errors.InvalidHTTPVersion,
    http_errors.InvalidHeader,
    http_errors.InvalidHeaderName,
    http_errors.InvalidProxyLine,
    http_errors.InvalidSchemeHeaders,
    http_errors.ObsoleteFolding,
)
MAX_MESSAGE = 200  # of gunicorn's own description, which may quote the request


def answer_for(exc: BaseException, cfg) -> tuple[int, str, str, str, bool]:
    """(status, reason, code, message, the client's fault) for an error gunicorn met."""
    if isinstance(exc, http_errors.LimitRequestLine):
        message = (
            f"The request line (method, path and query string) is longer than {exc.max_size} bytes"
        )
        return 414, "URI Too Long", "URI_TOO_LONG", message, True
    if isinstance(exc, http_errors.LimitRequestHeaders):
        message = (
            f"The request headers are too large: at most {cfg.limit_request_fields} "
            f"headers of at most {cfg.limit_request_field_size} bytes each"
        )
        return 431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE", message, True
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        message = f"Unsupported Transfer-Encoding: {exc}"[:MAX_MESSAGE]
        return 501, "Not Implemented", "NOT_IMPLEMENTED", message, True
    if isinstance(exc, http_errors.ForbiddenProxyRequest | SSLError):
        return 403, "Forbidden", "FORBIDDEN", "Request forbidden", True
    if isinstance(exc, BAD_REQUEST):
        message = f"Bad request: {exc}"[:MAX_MESSAGE]
        return 400, "Bad Request", "VALIDATION_ERROR", message, True
    client_fault = isinstance(exc, http_errors.ConfigurationProblem)  # logged as gunicorn does
    return (
        500,
        "Internal Server Error",
        "INTERNAL_ERROR",
        "An internal error occurred",
        client_fault,
    )


def error_bytes(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """The whole HTTP answer; the connection is closed after it, as gunicorn does."""
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "\r\n"
    )
    return (head + body).encode("ascii")  # json.dumps escapes anything else


class JsonErrors:
    """Overrides gunicorn's `Worker.handle_error` (gunicorn 23): the same statuses (but
    414), logs and access log line, with the contract's JSON body."""

    def handle_error(self, req, client, addr, exc):
        request_start = datetime.now()
        addr = addr or ("", -1)  # a unix socket
        status, reason, code, message, client_fault = answer_for(exc, self.cfg)
        request_id = uuid.uuid4().hex  # the request's own X-Request-ID was never parsed
        if client_fault:
            self.log.warning(
                "Invalid request from ip=%s: %s (request %s)", addr[0], exc, request_id
            )
        else:
            uri = getattr(req, "uri", "(no URI read)")
            self.log.exception("Error handling request %s (request %s)", uri, request_id)
        if req is None and isinstance(
            exc, http_errors.InvalidHeader | http_errors.InvalidHeaderName
        ):
            req = getattr(exc, "req", None)  # for the access log
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            environ["REMOTE_PORT"] = str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.response_length = len(message)
            self.log.access(response, req, environ, datetime.now() - request_start)
        try:
            util.write_nonblock(client, error_bytes(status, reason, code, message, request_id))
        except Exception:
            self.log.debug("Failed to send error message.")


class ThreadWorker(JsonErrors, gthread.ThreadWorker):
    """gunicorn's gthread worker, answering its own errors in JSON."""
