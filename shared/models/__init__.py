"""Typed SQLAlchemy 2 models, one module an aggregate."""

from shared.models.agent import Agent
from shared.models.event import OutboxEvent
from shared.models.session import WorkSession
from shared.models.task import Task, TaskDependency

__all__ = ["Agent", "OutboxEvent", "Task", "TaskDependency", "WorkSession"]
