"""Python client of the orchestrator's API, the reference agent and the demo.

Depends only on requests, simple-websocket and click: it imports nothing of the server.
"""

__version__ = "0.1.0"

from orchestrator_client.client import OrchestratorClient  # noqa: E402
from orchestrator_client.errors import (  # noqa: E402
    AgentNameTaken,
    AgentNotFound,
    AgentUnavailable,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InternalError,
    InvalidTransition,
    MethodNotAllowed,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    SessionNotFound,
    TaskNotFound,
    Unauthorized,
    ValidationError,
    WebhookNotFound,
)
from orchestrator_client.events import EventStream  # noqa: E402

__all__ = [
    "AgentNameTaken",
    "AgentNotFound",
    "AgentUnavailable",
    "Conflict",
    "ConnectionFailed",
    "EventStream",
    "Forbidden",
    "InternalError",
    "InvalidTransition",
    "MethodNotAllowed",
    "NotFound",
    "OrchestratorClient",
    "OrchestratorError",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "SessionNotFound",
    "TaskNotFound",
    "Unauthorized",
    "ValidationError",
    "WebhookNotFound",
]
