from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import ValidationError, fields

from orchestrator_api.schemas.common import QuerySchema, pool_field
from orchestrator_api.schemas.response import ResponseSchema
from shared.enums import AgentType, SessionStatus


class SinceField(fields.DateTime):
    """An ISO 8601 time (`Z` or an offset; without one, UTC, like every time we write)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValidationError("Not a valid ISO 8601 time, such as 2026-02-03T10:00:00Z.")
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class SessionStatisticsQuerySchema(QuerySchema):
    pool = pool_field()
    since = SinceField(
        metadata={
            "description": "Only sessions created at or after this time (ISO 8601; "
            "without an offset, UTC)",
            "example": "2026-02-03T00:00:00Z",
        }
    )


class AgentPerformanceQuerySchema(QuerySchema):
    pool = pool_field()


class SessionStatisticsSchema(ResponseSchema):
    total = fields.Integer(required=True)
    by_status = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        metadata={"description": f"Every status: {', '.join(s.value for s in SessionStatus)}"},
    )
    avg_completion_time_ms = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "Mean started_at to completed_at of COMPLETED sessions"},
    )
    success_rate = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "COMPLETED / (COMPLETED + FAILED + CANCELLED), 0-1"},
    )


class PerformanceFiguresSchema(ResponseSchema):
    total_agents = fields.Integer(required=True, metadata={"description": "Live agents"})
    active_agents = fields.Integer(
        required=True, metadata={"description": "Live agents that are not OFFLINE"}
    )
    avg_success_rate = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "Mean success_rate of the agents that finished a task"},
    )
    total_tasks_completed = fields.Integer(required=True)


class AgentPerformanceSchema(PerformanceFiguresSchema):
    by_type = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(PerformanceFiguresSchema),
        required=True,
        metadata={"description": f"Every agent type: {', '.join(t.value for t in AgentType)}"},
    )
