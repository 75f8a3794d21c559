from __future__ import annotations

import enum
import re
from datetime import UTC, datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from orchestrator_api.schemas.response import ResponseSchema
from shared import pools


class UpperEnum(fields.String):
    """An enum value, accepted in any case, always written upper case. A wrong value or a
    wrong type is refused with the allowed values in the message."""

    def __init__(self, enum_class: type[enum.Enum], **kwargs) -> None:
        self.enum_class = enum_class
        values = [m.value for m in enum_class]
        kwargs.setdefault("metadata", {})["enum"] = values
        self.allowed = f"Must be one of: {', '.join(values)}."
        kwargs.setdefault("error_messages", {}).setdefault("null", self.allowed)
        super().__init__(validate=validate.OneOf(values, error=self.allowed), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError(self.allowed)
        text = super()._deserialize(value, attr, data, **kwargs)
        return text.strip().upper()


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


def title_field(**kwargs) -> fields.String:
    """A title: 1-200 characters, not only whitespace."""
    return fields.String(validate=[validate.Length(min=1, max=200), not_blank], **kwargs)


def _pool_name(value: str) -> None:
    if not pools.is_valid(value):
        raise ValidationError(f"A pool name is {pools.POOL_RULE}.")


def pool_field(**kwargs) -> fields.String:
    return fields.String(
        validate=_pool_name,
        metadata={"description": f"The pool (team): {pools.POOL_RULE}", "example": "default"},
        **kwargs,
    )


class QuerySchema(Schema):
    """Query strings: an unknown parameter (a typo such as `stauts`) is refused, named."""

    class Meta:
        unknown = RAISE

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.value if isinstance(value, enum.Enum) else str(value)


class UTCDateTime(fields.DateTime):
    def _serialize(self, value: datetime | None, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StrictInteger(fields.Integer):
    """An integer that refuses booleans and floats such as 1.5 or true."""

    def __init__(self, **kwargs) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class QueryInteger(fields.Integer):
    """An integer in a query string: ASCII digits (and a minus) only. int() alone would
    also take "١" (ARABIC-INDIC DIGIT ONE), "1_000", "+1" or " 1 "."""

    DIGITS = re.compile(r"-?[0-9]{1,18}")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not self.DIGITS.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class PageQuerySchema(QuerySchema):
    page = QueryInteger(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    page_size = QueryInteger(load_default=20, validate=validate.Range(min=1, max=100))


class PageSchema(ResponseSchema):
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    has_more = fields.Boolean(required=True)


def page_body(page, items: list) -> dict:
    return {
        "items": items,
        "total": page.total,
        "page": page.page,
        "page_size": page.page_size,
        "has_more": page.has_more,
    }


class ErrorDetailSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    request_id = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)
