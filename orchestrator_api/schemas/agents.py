from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from orchestrator_api.schemas.common import (
    PageQuerySchema,
    StrictInteger,
    UpperEnum,
    UTCDateTime,
    pool_field,
)
from orchestrator_api.schemas.response import ResponseSchema
from shared.enums import AgentStatus, AgentType, Capability


class AgentRegisterSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    type = UpperEnum(AgentType, required=True)
    capabilities = fields.List(
        UpperEnum(Capability), required=True, validate=validate.Length(min=1, max=10)
    )
    max_concurrent_tasks = StrictInteger(load_default=5, validate=validate.Range(min=1, max=100))
    pool = pool_field()  # none: the token's only pool, else `default`

    @validates("name")
    def _name_is_visible(self, value, **_kwargs):
        if not value.strip():
            raise ValidationError("Must not be blank.")

    @validates("capabilities")
    def _no_repeats(self, value, **_kwargs):
        if len(set(value)) != len(value):
            raise ValidationError("Must not contain repeats.")


class HeartbeatSchema(Schema):
    current_load = StrictInteger(required=True, validate=validate.Range(min=0, max=100))


class AgentListQuerySchema(PageQuerySchema):
    capability = UpperEnum(Capability)
    available_only = fields.Boolean(load_default=False)
    status = UpperEnum(AgentStatus)
    type = UpperEnum(AgentType)
    include_deregistered = fields.Boolean(load_default=False)
    pool = pool_field()


class AgentSchema(ResponseSchema):
    id = fields.UUID()
    name = fields.String()
    pool = fields.String()
    type = UpperEnum(AgentType)
    capabilities = fields.List(fields.String())
    max_concurrent_tasks = fields.Integer()
    current_load = fields.Integer()
    active_tasks = fields.Integer()
    tasks_completed = fields.Integer(
        metadata={"description": "Tasks it completed, counted from the tasks"}
    )
    tasks_failed = fields.Integer(
        metadata={"description": "Its attempts that failed (`fail`, timeouts); not releases"}
    )
    success_rate = fields.Float(
        allow_none=True,
        metadata={
            "description": "tasks_completed / (tasks_completed + tasks_failed), 0-1; null "
            "before its first finished task"
        },
    )
    status = UpperEnum(AgentStatus)
    last_heartbeat_at = UTCDateTime()
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    deregistered_at = UTCDateTime(
        allow_none=True,
        metadata={"description": "Set once deregistered: the agent stays as a record"},
    )


class RegisteredAgentSchema(AgentSchema):
    token = fields.String(
        metadata={"description": "The agent's own token: role agent, with its agent_id"}
    )


class AgentPageSchema(ResponseSchema):
    items = fields.List(fields.Nested(AgentSchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    has_more = fields.Boolean(required=True)
