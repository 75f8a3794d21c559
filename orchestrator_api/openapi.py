"""What the generated OpenAPI spec cannot find by itself: the open routes outside
/api/v1 (`/health`, `/ready`, `/metrics`) and the WebSocket streams, which OpenAPI cannot
describe as operations and so are told in the spec's description (shown atop /docs)."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

STREAMS = """
## WebSocket streams

Connect with `ws://HOST/ws/...` (the token as `Authorization: Bearer` or `?token=`).
Every message is `{"id": "<n>", "type": "...", "payload": {...}, "timestamp": "...Z"}`;
reconnect with `?last_event_id=<n>` to receive every retained event you missed, then the
live stream, in order, without duplicates.

| stream | carries |
|---|---|
| `/ws/sessions` | every `session.*` and `task.*` event (`?pool=`: of that pool only) |
| `/ws/sessions/{id}` | the `session.*` and `task.*` events of that session |
| `/ws/agents` | every `agent.*` event (`?pool=`: of that pool only) |
| `/ws/agents/{id}` | that agent's `agent.*` events, and the `task.assigned` and \
`task.status_changed` of the tasks it holds or had taken back |
| `/ws/system` | `system.health` at connect and every `SYSTEM_EVENT_INTERVAL_SECONDS` |

| type | payload |
|---|---|
| `session.created` | `session_id`, `status` |
| `session.status_changed` | `session_id`, `status`, `previous_status` |
| `task.created` | `task_id`, `session_id`, `parent_id`, `status` |
| `task.status_changed` | `task_id`, `session_id`, `status`, `previous_status`, `agent_id` \
(+ `previous_agent_id` when taken back from an agent) |
| `task.assigned` | `task_id`, `session_id`, `agent_id`, `status` |
| `task.decomposed` | `task_id`, `session_id`, `status`, `template`, `subtask_ids` |
| `task.log` | `task_id`, `session_id`, `first_seq`, `last_seq`, `lines` (the batch's first \
32 KiB), `more`, `truncated`: one per accepted log batch (the rest: GET .../tasks/{id}/logs) |
| `agent.registered` | `agent_id`, `status`, `current_load`, `active_tasks` |
| `agent.status_changed` | `agent_id`, `status`, `previous_status`, `current_load` |
| `agent.heartbeat` | `agent_id`, `status`, `current_load`, `active_tasks` (on a change of \
status or load, else at most once per HEARTBEAT_EVENT_INTERVAL_SECONDS) |
| `agent.deregistered` | `agent_id`, `status`, `current_load` |
| `webhook.disabled` | `webhook_id`, `url`, `consecutive_failures`, `reason`: a webhook \
disabled after its failures in a row (delivered to webhooks, on no stream) |
| `webhook.test` | `webhook_id`: from POST /webhooks/{id}/test, to that webhook only |
| `system.health` | `status`, `database`, `redis`, `workers`, `counts` |
| `events.dropped` | `last_event_id`, `oldest_available_id`, `message` (resumed too late) |

Every event but `system.health` also carries `pool` (its session's, or its agent's).
Clients may send `ping` (answered `{"type": "pong"}`). Close codes: 1001 server shutting
down (reconnect with your last id), 1008 no answer to pings, 1013 the client did not keep
up (reconnect with your last id), 4400 malformed id, 4403 a pool the token may not read,
4404 no such session or agent.
The full contract: docs/API.md in the repository.
"""

_CHECKS = {"type": "object", "additionalProperties": {"type": "string", "example": "ok"}}
_HEALTH = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "example": "ok"},
        "version": {"type": "string"},
        "checks": _CHECKS,
    },
}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def describe(api: Api, app: Flask) -> None:
    """After every blueprint is registered (the paths come from the app's rules)."""
    rules = {rule.rule: rule for rule in app.url_map.iter_rules()}
    api.spec.options.setdefault("info", {})["description"] = (
        "The control plane for fleets of autonomous coding agents: sessions, tasks "
        "decomposed into dependency graphs, agents assigned by capability and capacity, "
        "and every change streamed live.\n" + STREAMS
    )
    api.spec.tag({"name": "health", "description": "Open routes: no token, no rate limit"})
    not_ready = {
        "type": "object",
        "properties": {
            "status": {"type": "string", "example": "unavailable"},
            "checks": _CHECKS,
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "example": "SERVICE_UNAVAILABLE"},
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                },
            },
        },
    }
    metrics = {
        "description": "Counters, gauges and histograms of every web process",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    open_routes = {
        "/health": ("Liveness: 200 while the process runs", {"200": _json("It runs", _HEALTH)}),
        "/ready": (
            "Readiness: PostgreSQL and Redis answer",
            {
                "200": _json("PostgreSQL and Redis answer", _HEALTH),
                "503": _json("Which one failed", not_ready),
            },
        ),
        "/metrics": ("Prometheus metrics (text exposition format)", {"200": metrics}),
    }
    for path, (summary, responses) in open_routes.items():
        operation = {"tags": ["health"], "summary": summary, "security": [], "responses": responses}
        api.spec.path(rule=rules[path], operations={"get": operation})
