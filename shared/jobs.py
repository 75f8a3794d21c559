"""Celery job names, shared by the API (which sends by name) and the worker."""

ASSIGN_READY_TASKS = "orchestrator.assign_ready_tasks"
DECOMPOSE_TASK = "orchestrator.decompose_task"
EXPIRE_HEARTBEATS = "orchestrator.expire_heartbeats"
TIME_OUT_TASKS = "orchestrator.time_out_tasks"
RECONCILE = "orchestrator.reconcile"
PUBLISH_EVENTS = "orchestrator.publish_events"
SETTLE_SESSION = "orchestrator.settle_session"
