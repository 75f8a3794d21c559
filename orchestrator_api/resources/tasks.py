"""Tasks (CONTRACT section 4)."""

from __future__ import annotations

from flask.views import MethodView

from orchestrator_api import pool_scope
from orchestrator_api.auth import acting_agent
from orchestrator_api.database import db
from orchestrator_api.resources.common import Blueprint, parse_id
from orchestrator_api.schemas.common import page_body
from orchestrator_api.schemas.tasks import (
    ActorSchema,
    AssignSchema,
    CompleteSchema,
    DecomposeSchema,
    FailSchema,
    ProgressReportSchema,
    TaskCreateSchema,
    TaskHistorySchema,
    TaskListQuerySchema,
    TaskPageSchema,
    TaskSchema,
)
from orchestrator_api.views import TASK_FIELDS, task_views
from shared import metrics
from shared.models import Task
from shared.services import assignment, decomposition, task_creation
from shared.services import task_lifecycle as lifecycle
from shared.services import tasks as service
from shared.unit_of_work import after_commit

blp = Blueprint("tasks", __name__, url_prefix="/api/v1/tasks", description="Tasks")


def task_view(task: Task) -> dict:
    db().flush()
    return task_views([task])[0]


@blp.route("")
class Tasks(MethodView):
    @blp.arguments(TaskListQuerySchema, location="query")
    @blp.response(200, TaskPageSchema)
    def get(self, query):
        """List tasks, newest first."""
        page, depends_on, subtasks = service.list_tasks(
            db(), **query, pools=pool_scope.visible_pools()
        )
        return page_body(page, task_views(page.items, depends_on, subtasks))

    @blp.arguments(TaskCreateSchema)
    @blp.response(201, TaskSchema)
    def post(self, body):
        """Create a task (BLOCKED until its dependencies complete)."""
        task = task_creation.create(db(), **body)
        db().flush()
        # A new task's dependencies are the ones given and it has no subtasks yet: no
        # queries needed, so the commit (and the assignment job) comes sooner.
        return {
            **{f: getattr(task, f) for f in TASK_FIELDS},
            "depends_on": sorted(body.get("depends_on") or []),
            "subtasks": [],
        }


@blp.route("/<task_id>")
class TaskById(MethodView):
    @blp.response(200, TaskSchema)
    def get(self, task_id):
        """Get one task with its dependencies and subtasks."""
        return task_view(service.get_or_raise(db(), task_id=parse_id(task_id)))


@blp.route("/<task_id>/events", methods=["GET"])
@blp.response(200, TaskHistorySchema)
def task_events(task_id):
    """The task's history: its events still retained (`EVENT_RETENTION`), oldest first,
    with the ids and shape the WebSocket streams use."""
    items = service.history(db(), task_id=parse_id(task_id))
    return {"items": items, "total": len(items)}


@blp.route("/<task_id>/start", methods=["POST"])
@blp.arguments(ActorSchema, required=False)
@blp.response(200, TaskSchema)
def start_task(body, task_id):
    """An agent starts a task assigned to it (ASSIGNED -> IN_PROGRESS)."""
    actor = acting_agent(body.get("agent_id"))
    task = lifecycle.start(db(), task_id=parse_id(task_id), agent_id=actor)
    return task_view(task)


@blp.route("/<task_id>/complete", methods=["POST"])
@blp.arguments(CompleteSchema, required=False)
@blp.response(200, TaskSchema)
def complete_task(body, task_id):
    """IN_PROGRESS -> COMPLETED, with a result; releases the tasks waiting on it."""
    actor = acting_agent(body.get("agent_id"))
    task = lifecycle.complete(
        db(), task_id=parse_id(task_id), result=body.get("result"), agent_id=actor
    )
    return task_view(task)


@blp.route("/<task_id>/fail", methods=["POST"])
@blp.arguments(FailSchema)
@blp.response(200, TaskSchema)
def fail_task(body, task_id):
    """Back to PENDING while attempts remain and the error is retryable, else FAILED."""
    body["agent_id"] = acting_agent(body.get("agent_id"))
    task = lifecycle.fail(db(), task_id=parse_id(task_id), **body)
    return task_view(task)


@blp.route("/<task_id>/cancel", methods=["POST"])
@blp.response(200, TaskSchema)
def cancel_task(task_id):
    """Cancel an unfinished task, its subtasks and the tasks waiting on it."""
    return task_view(lifecycle.cancel(db(), task_id=parse_id(task_id)))


@blp.route("/<task_id>/assign", methods=["POST"])
@blp.arguments(AssignSchema, required=False)
@blp.response(200, TaskSchema)
def assign_task(body, task_id):
    """Assign now, to the given agent or the best fitting one (503 when none fits)."""
    task = assignment.assign_one(db(), task_id=parse_id(task_id), agent_id=body.get("agent_id"))
    assigned = [(task.created_at, task.assigned_at, task.attempts)]
    after_commit(db(), lambda: metrics.observe_assignments(assigned))
    return task_view(task)


@blp.route("/<task_id>/progress", methods=["POST"])
@blp.arguments(ProgressReportSchema)
@blp.response(200, TaskSchema)
def report_progress(body, task_id):
    """An agent reports progress; the task's run deadline moves on."""
    body["agent_id"] = acting_agent(body.get("agent_id"))
    task = lifecycle.report_progress(db(), task_id=parse_id(task_id), **body)
    return task_view(task)


@blp.route("/<task_id>/decompose", methods=["POST"])
@blp.arguments(DecomposeSchema)
@blp.response(202, TaskSchema)
def decompose_task(body, task_id):
    """Accept a decomposition; a worker job creates the subtask DAG."""
    task = decomposition.accept(db(), task_id=parse_id(task_id), template=body["template"])
    return task_view(task)
