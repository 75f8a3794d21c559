"""Typed SQLAlchemy 2 models, one module an aggregate."""

from shared.models.agent import Agent
from shared.models.event import OutboxEvent
from shared.models.idempotency import IdempotencyKey
from shared.models.session import WorkSession
from shared.models.session_counts import SessionStatusCounts
from shared.models.task import Task, TaskDependency
from shared.models.task_failure import AgentTaskTotals, TaskFailure
from shared.models.task_log import TaskLogLine, TaskLogState
from shared.models.webhook import Webhook, WebhookDelivery

__all__ = [
    "Agent",
    "AgentTaskTotals",
    "IdempotencyKey",
    "OutboxEvent",
    "SessionStatusCounts",
    "Task",
    "TaskDependency",
    "TaskFailure",
    "TaskLogLine",
    "TaskLogState",
    "Webhook",
    "WebhookDelivery",
    "WorkSession",
]
