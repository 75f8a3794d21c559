"""Task logs (docs/API.md, "Task logs"): the holder appends, readers of the task read."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from orchestrator_api.auth import current_principal
from orchestrator_api.database import db
from orchestrator_api.resources.common import Blueprint, parse_id
from orchestrator_api.schemas.task_logs import (
    LogAppendedSchema,
    LogBatchSchema,
    LogPageSchema,
    LogQuerySchema,
)
from shared.errors import Forbidden
from shared.services import task_logs as service

blp = Blueprint("task_logs", __name__, url_prefix="/api/v1/tasks", description="Task logs")


@blp.route("/<task_id>/logs")
class TaskLogs(MethodView):
    @blp.arguments(LogQuerySchema, location="query")
    @blp.response(200, LogPageSchema)
    def get(self, query, task_id):
        """The task's log lines after `after`, oldest first (resumable)."""
        return service.read(db(), task_id=parse_id(task_id), **query)

    @blp.arguments(LogBatchSchema)
    @blp.response(202, LogAppendedSchema)
    def post(self, body, task_id):
        """The agent holding the task appends lines to its log."""
        task_id = parse_id(task_id)
        return service.append(
            db(),
            task_id=task_id,
            agent_id=_writer(body.get("agent_id")),
            lines=body["lines"],
            max_bytes=current_app.extensions["orchestrator"].settings.task_log_max_bytes,
        )


def _writer(claimed):
    """Only an agent writes a log: an agent token's own agent, or, without a token
    (development), the `agent_id` of the body. A person's token may read, not write."""
    principal = current_principal()
    if principal.role == "agent":
        if claimed is not None and claimed != principal.agent_id:
            raise Forbidden(
                "An agent token acts as its own agent; agent_id must be omitted or match"
            )
        return principal.agent_id
    if not principal.anonymous:
        raise Forbidden("Only the agent holding the task writes its log (with its own token)")
    return claimed
