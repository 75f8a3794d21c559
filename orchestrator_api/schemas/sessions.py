from __future__ import annotations

from marshmallow import Schema, fields, validate

from orchestrator_api.schemas.common import (
    PageQuerySchema,
    PageSchema,
    UpperEnum,
    UTCDateTime,
    pool_field,
    title_field,
)
from orchestrator_api.schemas.response import ResponseSchema
from shared.enums import Priority, SessionStatus, SessionType


class SessionCreateSchema(Schema):
    title = title_field(required=True)
    pool = pool_field()  # none: the token's only pool, else `default`
    type = UpperEnum(SessionType, load_default=SessionType.CODING.value)
    priority = UpperEnum(Priority, load_default=Priority.MEDIUM.value)
    initial_prompt = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=10_000)
    )


class SessionListQuerySchema(PageQuerySchema):
    status = UpperEnum(SessionStatus)
    pool = pool_field()


class SessionProgressSchema(ResponseSchema):
    total = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    percent_complete = fields.Float()


class SessionSchema(ResponseSchema):
    id = fields.UUID()
    pool = fields.String()
    title = fields.String()
    status = UpperEnum(SessionStatus)
    type = UpperEnum(SessionType)
    priority = UpperEnum(Priority)
    initial_prompt = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    progress = fields.Nested(SessionProgressSchema)
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    started_at = UTCDateTime(allow_none=True)
    completed_at = UTCDateTime(allow_none=True)


class SessionPageSchema(PageSchema):
    items = fields.List(fields.Nested(SessionSchema), required=True)
