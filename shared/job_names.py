"""Celery job names, shared by the API (which sends by name) and the worker."""

ASSIGN_READY_TASKS = "orchestrator.assign_ready_tasks"
DECOMPOSE_TASK = "orchestrator.decompose_task"
EXPIRE_HEARTBEATS = "orchestrator.expire_heartbeats"
TIME_OUT_TASKS = "orchestrator.time_out_tasks"
RECONCILE = "orchestrator.reconcile"
PUBLISH_EVENTS = "orchestrator.publish_events"
SETTLE_SESSION = "orchestrator.settle_session"
PRUNE_TASK_LOGS = "orchestrator.prune_task_logs"
DELIVER_WEBHOOK = "orchestrator.deliver_webhook"
SWEEP_WEBHOOK_DELIVERIES = "orchestrator.sweep_webhook_deliveries"

# Deliveries have a queue of their own (the Procfile's `webhooks` worker), so a slow or
# dead receiver never holds up assignment and the sweeps.
WEBHOOK_QUEUE = "webhooks"
ROUTES = {DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE}}
