from __future__ import annotations

from marshmallow import Schema, fields, validate

from orchestrator_api.schemas.common import (
    PageQuerySchema,
    PageSchema,
    UTCDateTime,
    pool_field,
)
from orchestrator_api.schemas.response import ResponseSchema
from shared import events
from shared.services.webhooks import MIN_SECRET_LENGTH

EVENT_TYPES_HELP = (
    "Event types to receive: "
    + ", ".join(events.WEBHOOK_EVENT_TYPES)
    + "; or a wildcard: "
    + ", ".join(events.WEBHOOK_WILDCARDS)
)


class WebhookCreateSchema(Schema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={
            "description": "http:// or https://; see the address rule",
            "example": "https://ci.example.com/hooks/orchestrator",
        },
    )
    event_types = fields.List(
        fields.String(validate=validate.Length(min=1, max=40)),
        required=True,
        validate=validate.Length(min=1, max=50),
        metadata={"description": EVENT_TYPES_HELP, "example": ["session.*", "task.status_changed"]},
    )
    pool = pool_field(load_default=None, allow_none=True)  # none: every pool's events
    secret = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=MIN_SECRET_LENGTH, max=200),
        metadata={
            "description": f"The signing secret, {MIN_SECRET_LENGTH}-200 characters; "
            "made for you when absent. Shown in this answer only."
        },
    )


class WebhookSchema(ResponseSchema):
    id = fields.UUID()
    url = fields.String()
    event_types = fields.List(fields.String())
    pool = fields.String(allow_none=True)
    enabled = fields.Boolean()
    consecutive_failures = fields.Integer()
    disabled_at = UTCDateTime(allow_none=True)
    created_at = UTCDateTime()
    updated_at = UTCDateTime()


class CreatedWebhookSchema(WebhookSchema):
    secret = fields.String(
        metadata={"description": "The signing secret: shown here once, never again"}
    )


class WebhookPageSchema(PageSchema):
    items = fields.List(fields.Nested(WebhookSchema), required=True)


DELIVERY_STATUSES = ("PENDING", "SUCCEEDED", "FAILED")


class DeliveryListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliverySchema(ResponseSchema):
    id = fields.UUID()
    webhook_id = fields.UUID()
    event_id = fields.String(metadata={"description": "The event's id (deduplicate on it)"})
    event_type = fields.String()
    status = fields.String(metadata={"enum": list(DELIVERY_STATUSES)})
    attempts = fields.Integer()
    status_code = fields.Integer(allow_none=True, attribute="last_status_code")
    duration_ms = fields.Integer(allow_none=True, attribute="last_duration_ms")
    error = fields.String(allow_none=True, attribute="last_error")
    last_attempt_at = UTCDateTime(allow_none=True)
    next_attempt_at = UTCDateTime(
        allow_none=True, metadata={"description": "When PENDING: the next attempt"}
    )
    created_at = UTCDateTime()


class DeliveryPageSchema(PageSchema):
    items = fields.List(fields.Nested(DeliverySchema), required=True)


class WebhookTestSentSchema(ResponseSchema):
    queued = fields.Boolean()
