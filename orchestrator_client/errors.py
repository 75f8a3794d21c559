"""The contract's error codes as exceptions (CONTRACT section 6).

Every error the API answers becomes an `OrchestratorError` subclass chosen by its `code`
(or, for a body that is not the contract's, by its HTTP status). A request that never got
an answer, after its retries, is `ConnectionFailed`.
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """An error answer of the API: `code`, `message`, `status`, `request_id`, `details`."""

    default_code = "INTERNAL_ERROR"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        status: int | None = None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.status = status
        self.request_id = request_id
        self.details = details
        self.body = body  # the whole decoded answer (for /ready: its `checks`)
        self.retry_after = retry_after
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f" (HTTP {self.status}, request {self.request_id})" if self.status else ""
        details = f": {self.details}" if self.details else ""
        return f"{self.code}: {self.message}{details}{where}"


class ConnectionFailed(OrchestratorError):
    """No answer: the server could not be reached or timed out, on every attempt."""

    default_code = "CONNECTION_FAILED"


class ValidationError(OrchestratorError):
    default_code = "VALIDATION_ERROR"


class InvalidTransition(OrchestratorError):
    default_code = "INVALID_TRANSITION"


class Unauthorized(OrchestratorError):
    default_code = "UNAUTHORIZED"


class Forbidden(OrchestratorError):
    default_code = "FORBIDDEN"


class NotFound(OrchestratorError):
    default_code = "NOT_FOUND"


class SessionNotFound(NotFound):
    default_code = "SESSION_NOT_FOUND"


class AgentNotFound(NotFound):
    default_code = "AGENT_NOT_FOUND"


class TaskNotFound(NotFound):
    default_code = "TASK_NOT_FOUND"


class WebhookNotFound(NotFound):
    default_code = "WEBHOOK_NOT_FOUND"


class MethodNotAllowed(OrchestratorError):
    default_code = "METHOD_NOT_ALLOWED"


class Conflict(OrchestratorError):
    default_code = "CONFLICT"


class AgentNameTaken(Conflict):
    default_code = "AGENT_NAME_TAKEN"


class PayloadTooLarge(OrchestratorError):
    default_code = "PAYLOAD_TOO_LARGE"


class RateLimited(OrchestratorError):
    default_code = "RATE_LIMITED"


class InternalError(OrchestratorError):
    default_code = "INTERNAL_ERROR"


class AgentUnavailable(OrchestratorError):
    default_code = "AGENT_UNAVAILABLE"


class ServiceUnavailable(OrchestratorError):
    default_code = "SERVICE_UNAVAILABLE"


ERRORS_BY_CODE: dict[str, type[OrchestratorError]] = {
    cls.default_code: cls
    for cls in (
        ValidationError,
        InvalidTransition,
        Unauthorized,
        Forbidden,
        NotFound,
        SessionNotFound,
        AgentNotFound,
        TaskNotFound,
        WebhookNotFound,
        MethodNotAllowed,
        Conflict,
        AgentNameTaken,
        PayloadTooLarge,
        RateLimited,
        InternalError,
        AgentUnavailable,
        ServiceUnavailable,
    )
}
# For answers without the contract's body (a proxy's 502, say): the status decides.
CODES_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
    502: "SERVICE_UNAVAILABLE",
    503: "SERVICE_UNAVAILABLE",
    504: "SERVICE_UNAVAILABLE",
}


def error_for(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> OrchestratorError:
    """The exception for an error answer: by the body's `error.code`, else by status."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = (
        error.get("code")
        or CODES_BY_STATUS.get(status)
        or ("VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR")
    )
    cls = ERRORS_BY_CODE.get(code, OrchestratorError)
    return cls(
        code,
        error.get("message") or f"HTTP {status}",
        status,
        error.get("request_id") or request_id,
        error.get("details"),
        body=body,
        retry_after=retry_after,
    )
