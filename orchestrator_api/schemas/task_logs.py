"""Task logs (docs/API.md, "Task logs")."""

from __future__ import annotations

from datetime import UTC

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from orchestrator_api.schemas.common import QueryInteger, QuerySchema, UTCDateTime
from orchestrator_api.schemas.response import ResponseSchema
from shared.services import task_logs as service

STREAMS = ("stdout", "stderr")


class LogStream(fields.String):
    """`stdout` or `stderr`, in any case; written lower case (`system` is the server's)."""

    ALLOWED = f"Must be one of: {', '.join(STREAMS)}."

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {})["enum"] = list(STREAMS)
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or value.strip().lower() not in STREAMS:
            raise ValidationError(self.ALLOWED)
        return value.strip().lower()


class LogLineInSchema(Schema):
    stream = LogStream(required=True)
    text = fields.String(
        required=True, metadata={"description": "One line, without its line break"}
    )
    at = fields.AwareDateTime(
        default_timezone=UTC,
        load_default=None,
        allow_none=True,
        metadata={"description": "When it was printed (default: when the server got it)"},
    )


class LogBatchSchema(Schema):
    lines = fields.List(
        fields.Nested(LogLineInSchema),
        required=True,
        validate=validate.Length(min=1),
        metadata={
            "description": f"At most {service.MAX_LINES_PER_BATCH} lines and "
            f"{service.MAX_BATCH_BYTES} bytes of text (UTF-8); beyond, 413"
        },
    )
    agent_id = fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "Without authentication (development): the holder"},
    )

    @pre_load
    def check_size(self, data, **kwargs):
        """413 before the lines are each validated (a batch may be 1 MiB of lines)."""
        lines = data.get("lines") if isinstance(data, dict) else None
        if isinstance(lines, list):
            service.check_batch([line for line in lines if isinstance(line, dict)])
        return data


class LogAppendedSchema(ResponseSchema):
    accepted = fields.Integer(required=True, metadata={"description": "Lines stored"})
    dropped = fields.Integer(
        required=True, metadata={"description": "Lines dropped: the log's cap was reached"}
    )
    truncated = fields.Boolean(
        required=True, metadata={"description": "The log reached TASK_LOG_MAX_BYTES"}
    )
    last_seq = fields.Integer(required=True, metadata={"description": "The log's last line"})


class LogQuerySchema(QuerySchema):
    after = QueryInteger(load_default=0, validate=validate.Range(min=0))
    limit = QueryInteger(
        load_default=service.DEFAULT_PAGE, validate=validate.Range(min=1, max=service.MAX_PAGE)
    )


class LogLineSchema(ResponseSchema):
    seq = fields.Integer(required=True)
    stream = fields.String(required=True, metadata={"enum": ["stdout", "stderr", "system"]})
    text = fields.String(required=True)
    at = UTCDateTime(required=True)


class LogPageSchema(ResponseSchema):
    items = fields.List(fields.Nested(LogLineSchema), required=True)
    next_after = fields.Integer(
        required=True, metadata={"description": "Pass as `after` to read on"}
    )
    has_more = fields.Boolean(required=True)
    last_seq = fields.Integer(required=True, metadata={"description": "The log's last line"})
    truncated = fields.Boolean(required=True)
    pruned = fields.Boolean(
        required=True, metadata={"description": "Removed by TASK_LOG_RETENTION_SECONDS"}
    )
    finished = fields.Boolean(
        required=True, metadata={"description": "The task is finished: no line will follow"}
    )
