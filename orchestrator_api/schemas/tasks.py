from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from orchestrator_api.schemas.common import (
    PageQuerySchema,
    PageSchema,
    StrictInteger,
    UpperEnum,
    UTCDateTime,
    pool_field,
    title_field,
)
from orchestrator_api.schemas.response import ResponseSchema
from shared.enums import Capability, Complexity, DecompositionTemplate, TaskStatus


class TaskCreateSchema(Schema):
    session_id = fields.UUID(required=True)
    title = title_field(required=True)
    description = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=10_000)
    )
    complexity = UpperEnum(Complexity, load_default=Complexity.MEDIUM.value)
    required_capabilities = fields.List(
        UpperEnum(Capability), load_default=None, validate=validate.Length(min=1, max=10)
    )
    depends_on = fields.List(fields.UUID(), load_default=None, validate=validate.Length(max=100))
    parent_id = fields.UUID(load_default=None, allow_none=True)
    timeout_seconds = StrictInteger(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=86_400)
    )

    @validates("required_capabilities")
    def _no_repeats(self, value, **_kwargs):
        if value is not None and len(set(value)) != len(value):
            raise ValidationError("Must not contain repeats.")

    @validates("depends_on")
    def _no_repeated_dependencies(self, value, **_kwargs):
        if value is not None and len(set(value)) != len(value):
            raise ValidationError("Must not contain repeats.")


class TaskListQuerySchema(PageQuerySchema):
    session_id = fields.UUID()
    status = UpperEnum(TaskStatus)
    parent_only = fields.Boolean(load_default=False)
    agent_id = fields.UUID()
    pool = pool_field()


class ActorSchema(Schema):
    """Who acts on the task. Without authentication an agent may name itself; with a
    token, the token's agent is the actor."""

    agent_id = fields.UUID(load_default=None, allow_none=True)


class CompleteSchema(ActorSchema):
    result = fields.Dict(load_default=None, allow_none=True)


class FailSchema(ActorSchema):
    error = fields.String(required=True, validate=validate.Length(min=1, max=10_000))
    retryable = fields.Boolean(load_default=True)


class ProgressReportSchema(ActorSchema):
    progress = StrictInteger(required=True, validate=validate.Range(min=0, max=100))
    message = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class AssignSchema(Schema):
    agent_id = fields.UUID(load_default=None, allow_none=True)


class DecomposeSchema(Schema):
    template = UpperEnum(DecompositionTemplate, required=True)


class TaskSchema(ResponseSchema):
    id = fields.UUID()
    session_id = fields.UUID()
    parent_id = fields.UUID(allow_none=True)
    title = fields.String()
    description = fields.String(allow_none=True)
    complexity = UpperEnum(Complexity)
    status = UpperEnum(TaskStatus)
    required_capabilities = fields.List(fields.String())
    depends_on = fields.List(fields.UUID())
    subtasks = fields.List(fields.UUID())
    assigned_agent_id = fields.UUID(allow_none=True)
    attempts = fields.Integer()
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    progress = fields.Integer()
    progress_message = fields.String(allow_none=True)
    timeout_seconds = fields.Integer()
    decomposition_template = UpperEnum(DecompositionTemplate, allow_none=True)
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    assigned_at = UTCDateTime(allow_none=True)
    started_at = UTCDateTime(allow_none=True)
    completed_at = UTCDateTime(allow_none=True)
    deadline_at = UTCDateTime(allow_none=True)


class TaskPageSchema(PageSchema):
    items = fields.List(fields.Nested(TaskSchema), required=True)


class TaskListSchema(ResponseSchema):
    items = fields.List(fields.Nested(TaskSchema), required=True)
    total = fields.Integer(required=True)


class EventSchema(ResponseSchema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    payload = fields.Dict(required=True)
    timestamp = fields.String(required=True)


class TaskHistorySchema(ResponseSchema):
    items = fields.List(fields.Nested(EventSchema), required=True)
    total = fields.Integer(required=True)
