"""Statistics: how the fleet is doing, for dashboards and other tools (docs/API.md,
"Statistics"). Their paths sit beside `/sessions/{id}` and `/agents/{id}`, whose id
converters exclude `statistics` and `performance` (resources/common.IdConverter)."""

from __future__ import annotations

from orchestrator_api import pool_scope
from orchestrator_api.database import db
from orchestrator_api.resources.common import Blueprint
from orchestrator_api.schemas.statistics import (
    AgentPerformanceQuerySchema,
    AgentPerformanceSchema,
    SessionStatisticsQuerySchema,
    SessionStatisticsSchema,
)
from shared.services import statistics as service

blp = Blueprint("statistics", __name__, url_prefix="/api/v1", description="Statistics")

SESSION_STATISTICS = "statistics"
AGENT_PERFORMANCE = "performance"


@blp.route(f"/sessions/{SESSION_STATISTICS}", methods=["GET"])
@blp.arguments(SessionStatisticsQuerySchema, location="query")
@blp.response(200, SessionStatisticsSchema)
def session_statistics(query):
    """Sessions by status, the mean time from start to finish of the completed ones, and
    the share of finished sessions that completed; `pool` and `since` (created_at) filter."""
    return service.session_statistics(db(), **query, pools=pool_scope.visible_pools())


@blp.route(f"/agents/{AGENT_PERFORMANCE}", methods=["GET"])
@blp.arguments(AgentPerformanceQuerySchema, location="query")
@blp.response(200, AgentPerformanceSchema)
def agent_performance(query):
    """Live and active agents, their mean success rate and the tasks they completed, for
    the fleet (or `pool`) and per agent type."""
    return service.agent_performance(db(), **query, pools=pool_scope.visible_pools())
