"""Domain errors. Each carries its contract code and HTTP status (CONTRACT section 6)."""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationError(OrchestratorError):
    code = "VALIDATION_ERROR"
    status = 400


class InvalidTransition(OrchestratorError):
    code = "INVALID_TRANSITION"
    status = 400


class Unauthorized(OrchestratorError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(OrchestratorError):
    code = "FORBIDDEN"
    status = 403


class NotFound(OrchestratorError):
    code = "NOT_FOUND"
    status = 404


class SessionNotFound(NotFound):
    code = "SESSION_NOT_FOUND"


class AgentNotFound(NotFound):
    code = "AGENT_NOT_FOUND"


class TaskNotFound(NotFound):
    code = "TASK_NOT_FOUND"


class WebhookNotFound(NotFound):
    code = "WEBHOOK_NOT_FOUND"


class Conflict(OrchestratorError):
    code = "CONFLICT"
    status = 409


class AgentNameTaken(Conflict):
    code = "AGENT_NAME_TAKEN"


class PayloadTooLarge(OrchestratorError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class AgentUnavailable(OrchestratorError):
    code = "AGENT_UNAVAILABLE"
    status = 503


class ServiceUnavailable(OrchestratorError):
    code = "SERVICE_UNAVAILABLE"
    status = 503
