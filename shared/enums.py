"""The enumerations of CONTRACT section 1. Values are upper case on output."""

from __future__ import annotations

import enum


class SessionStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SessionType(enum.StrEnum):
    CODING = "CODING"
    REVIEW = "REVIEW"
    DEBUGGING = "DEBUGGING"
    REFACTORING = "REFACTORING"
    TESTING = "TESTING"
    DOCUMENTATION = "DOCUMENTATION"


class Priority(enum.StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


# Lower rank is served first (CONTRACT section 5).
PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class AgentType(enum.StrEnum):
    BACKEND = "BACKEND"
    FRONTEND = "FRONTEND"
    FULLSTACK = "FULLSTACK"
    DEVOPS = "DEVOPS"
    QA = "QA"
    SECURITY = "SECURITY"


class Capability(enum.StrEnum):
    CODE_GENERATION = "CODE_GENERATION"
    CODE_REVIEW = "CODE_REVIEW"
    DEBUGGING = "DEBUGGING"
    REFACTORING = "REFACTORING"
    TESTING = "TESTING"
    DOCUMENTATION = "DOCUMENTATION"
    SECURITY_AUDIT = "SECURITY_AUDIT"
    PERFORMANCE_OPTIMIZATION = "PERFORMANCE_OPTIMIZATION"
    SYSTEM_DESIGN = "SYSTEM_DESIGN"
    DEPLOYMENT = "DEPLOYMENT"


class AgentStatus(enum.StrEnum):
    IDLE = "IDLE"
    ACTIVE = "ACTIVE"
    BUSY = "BUSY"
    OFFLINE = "OFFLINE"


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    BLOCKED = "BLOCKED"
    ASSIGNED = "ASSIGNED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Complexity(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class DecompositionTemplate(enum.StrEnum):
    MICROSERVICE = "MICROSERVICE"
    CRUD = "CRUD"
    FEATURE = "FEATURE"
    BUGFIX = "BUGFIX"
    SECURITY = "SECURITY"
    UI = "UI"


FINISHED_SESSION_STATUSES = frozenset(
    {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED}
)
