"""A Python client for the orchestrator's API: one typed method per route, plain dicts back,
the contract's error codes as exceptions (orchestrator_client.errors), retries and
Idempotency-Keys (orchestrator_client.transport), and event streams
(orchestrator_client.events).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from orchestrator_client.events import EventStream
from orchestrator_client.transport import DEFAULT_URL, HttpClient

__all__ = ["DEFAULT_URL", "OrchestratorClient"]

JSON = dict[str, Any]
Id = str | uuid.UUID


class OrchestratorClient(HttpClient):
    """`OrchestratorClient(base_url, token=None, timeout=10.0, *, retries=3, ...)`; see
    HttpClient for the options."""

    # Health (CONTRACT section 10)

    def health(self) -> JSON:
        return self._request("GET", "/health")

    def ready(self) -> JSON:
        """200's body; a 503 (after the retries) raises ServiceUnavailable, whose `body`
        has the `checks`."""
        return self._request("GET", "/ready")

    def queue_length(self, queue: str = "celery") -> int | None:
        """Jobs waiting in the Celery queue, as /metrics reports it (the server asks its
        broker); None when the broker did not answer."""
        text = self._request("GET", "/metrics")
        match = re.search(
            rf'^orchestrator_celery_queue_length{{queue="{re.escape(queue)}"}} ([0-9.e+]+)$',
            text,
            re.M,
        )
        return int(float(match.group(1))) if match else None

    # Sessions (CONTRACT section 2)

    def list_sessions(
        self,
        *,
        status: str | None = None,
        pool: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> JSON:
        return self._get(
            "/api/v1/sessions", status=status, pool=pool, page=page, page_size=page_size
        )

    def create_session(
        self,
        title: str,
        *,
        type: str | None = None,
        priority: str | None = None,
        initial_prompt: str | None = None,
        pool: str | None = None,
    ) -> JSON:
        body = _body(
            title=title, type=type, priority=priority, initial_prompt=initial_prompt, pool=pool
        )
        return self._post("/api/v1/sessions", body)

    def get_session(self, session_id: Id) -> JSON:
        return self._get(f"/api/v1/sessions/{_seg(session_id)}")

    def start_session(self, session_id: Id) -> JSON:
        return self._session_action(session_id, "start")

    def pause_session(self, session_id: Id) -> JSON:
        return self._session_action(session_id, "pause")

    def resume_session(self, session_id: Id) -> JSON:
        return self._session_action(session_id, "resume")

    def cancel_session(self, session_id: Id) -> JSON:
        return self._session_action(session_id, "cancel")

    def complete_session(self, session_id: Id) -> JSON:
        return self._session_action(session_id, "complete")

    def _session_action(self, session_id: Id, action: str) -> JSON:
        return self._post(f"/api/v1/sessions/{_seg(session_id)}/{action}")

    # Agents (CONTRACT section 3)

    def register_agent(
        self,
        name: str,
        type: str,
        capabilities: Iterable[str],
        *,
        max_concurrent_tasks: int | None = None,
        pool: str | None = None,
    ) -> JSON:
        """The agent, with its own `token` where the server issues one. It takes only
        tasks of its pool's sessions (`default` when not given)."""
        body = _body(
            name=name,
            type=type,
            capabilities=list(capabilities),
            max_concurrent_tasks=max_concurrent_tasks,
            pool=pool,
        )
        return self._post("/api/v1/agents/register", body)

    def list_agents(
        self,
        *,
        capability: str | None = None,
        available_only: bool | None = None,
        status: str | None = None,
        type: str | None = None,
        pool: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> JSON:
        return self._get(
            "/api/v1/agents",
            capability=capability,
            available_only=available_only,
            status=status,
            type=type,
            pool=pool,
            page=page,
            page_size=page_size,
        )

    def get_agent(self, agent_id: Id) -> JSON:
        return self._get(f"/api/v1/agents/{_seg(agent_id)}")

    def deregister_agent(self, agent_id: Id) -> None:
        self._request("DELETE", f"/api/v1/agents/{_seg(agent_id)}")

    def heartbeat(self, agent_id: Id, current_load: int) -> JSON:
        return self._post(
            f"/api/v1/agents/{_seg(agent_id)}/heartbeat", {"current_load": current_load}
        )

    def agent_tasks(self, agent_id: Id) -> list[JSON]:
        """The agent's ASSIGNED and IN_PROGRESS tasks."""
        return self._get(f"/api/v1/agents/{_seg(agent_id)}/tasks")["items"]

    # Statistics (docs/API.md, "Statistics")

    def session_statistics(
        self, pool: str | None = None, since: datetime | str | None = None
    ) -> JSON:
        """Sessions by status, mean completion time, success rate; `since` filters on
        creation (a datetime without a timezone is taken as UTC)."""
        return self._get("/api/v1/sessions/statistics", pool=pool, since=_time(since))

    def agent_performance(self, pool: str | None = None) -> JSON:
        """Live and active agents, mean success rate, tasks completed, per agent type."""
        return self._get("/api/v1/agents/performance", pool=pool)

    # Tasks (CONTRACT section 4)

    def create_task(
        self,
        session_id: Id,
        title: str,
        *,
        description: str | None = None,
        complexity: str | None = None,
        required_capabilities: Iterable[str] | None = None,
        depends_on: Iterable[Id] | None = None,
        parent_id: Id | None = None,
        timeout_seconds: int | None = None,
    ) -> JSON:
        body = _body(
            session_id=str(session_id),
            title=title,
            description=description,
            complexity=complexity,
            required_capabilities=_list(required_capabilities),
            depends_on=_list(depends_on),
            parent_id=str(parent_id) if parent_id is not None else None,
            timeout_seconds=timeout_seconds,
        )
        return self._post("/api/v1/tasks", body)

    def list_tasks(
        self,
        *,
        session_id: Id | None = None,
        status: str | None = None,
        parent_only: bool | None = None,
        agent_id: Id | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> JSON:
        return self._get(
            "/api/v1/tasks",
            session_id=session_id,
            status=status,
            parent_only=parent_only,
            agent_id=agent_id,
            page=page,
            page_size=page_size,
        )

    def get_task(self, task_id: Id) -> JSON:
        return self._get(f"/api/v1/tasks/{_seg(task_id)}")

    def start_task(self, task_id: Id, *, agent_id: Id | None = None) -> JSON:
        return self._task_action(task_id, "start", agent_id=agent_id)

    def complete_task(
        self, task_id: Id, result: dict | None = None, *, agent_id: Id | None = None
    ) -> JSON:
        return self._task_action(task_id, "complete", result=result, agent_id=agent_id)

    def fail_task(
        self, task_id: Id, error: str, *, retryable: bool = True, agent_id: Id | None = None
    ) -> JSON:
        return self._task_action(
            task_id, "fail", error=error, retryable=retryable, agent_id=agent_id
        )

    def cancel_task(self, task_id: Id) -> JSON:
        return self._task_action(task_id, "cancel")

    def assign_task(self, task_id: Id, agent_id: Id | None = None) -> JSON:
        """Assign now; AgentUnavailable (not retried) when no agent fits."""
        return self._task_action(task_id, "assign", agent_id=agent_id)

    def report_progress(
        self,
        task_id: Id,
        progress: int,
        message: str | None = None,
        *,
        agent_id: Id | None = None,
    ) -> JSON:
        return self._task_action(
            task_id, "progress", progress=progress, message=message, agent_id=agent_id
        )

    def decompose_task(self, task_id: Id, template: str) -> JSON:
        """Accepted (202): a worker creates the subtasks; `get_task` shows them."""
        return self._task_action(task_id, "decompose", template=template)

    # Task logs (docs/API.md, "Task logs")

    def append_task_logs(self, task_id: Id, lines: list[dict]) -> JSON:
        """Append lines to the log of a task this agent holds: each line
        `{"stream": "stdout"|"stderr", "text": "...", "at": optional ISO time}`, at most
        `MAX_LOG_LINES_PER_BATCH` lines and `MAX_LOG_BATCH_BYTES` of text a call. Answers
        `{"accepted", "dropped", "truncated", "last_seq"}`. Text PostgreSQL cannot store
        (NUL, lone surrogates: the server refuses them with 400) is replaced with U+FFFD
        here, so a command's raw output is never refused."""
        clean = [{**line, "text": printable_text(line.get("text", ""))} for line in lines]
        return self._post(f"/api/v1/tasks/{_seg(task_id)}/logs", {"lines": clean})

    def task_logs(self, task_id: Id, *, after: int | None = None, limit: int | None = None) -> JSON:
        """Log lines after sequence number `after` (from the start when None), oldest
        first: `{"items": [{"seq", "stream", "text", "at"}], "next_after", "truncated",
        "finished"}`; pass `next_after` back to read on."""
        return self._get(f"/api/v1/tasks/{_seg(task_id)}/logs", after=after, limit=limit)

    def _task_action(self, task_id: Id, action: str, **fields: Any) -> JSON:
        if fields.get("agent_id") is not None:
            fields["agent_id"] = str(fields["agent_id"])
        return self._post(f"/api/v1/tasks/{_seg(task_id)}/{action}", _body(**fields))

    # Webhooks (docs/API.md, "Webhooks"; admin and operator tokens)

    def create_webhook(
        self,
        url: str,
        event_types: Iterable[str],
        *,
        pool: str | None = None,
        secret: str | None = None,
    ) -> JSON:
        """Register a webhook. The answer's `secret` (yours, or made when None) is shown
        this once: keep it to verify the `X-Orchestrator-Signature` of each delivery."""
        body = _body(url=url, event_types=list(event_types), pool=pool, secret=secret)
        return self._post("/api/v1/webhooks", body)

    def list_webhooks(self, *, page: int = 1, page_size: int = 20) -> JSON:
        return self._get("/api/v1/webhooks", page=page, page_size=page_size)

    def get_webhook(self, webhook_id: Id) -> JSON:
        return self._get(f"/api/v1/webhooks/{_seg(webhook_id)}")

    def delete_webhook(self, webhook_id: Id) -> None:
        self._request("DELETE", f"/api/v1/webhooks/{_seg(webhook_id)}")

    def webhook_deliveries(
        self, webhook_id: Id, *, status: str | None = None, page: int = 1, page_size: int = 20
    ) -> JSON:
        """The delivery log, newest first: each event's status, attempts, and its last
        attempt's status_code, duration_ms and error."""
        return self._get(
            f"/api/v1/webhooks/{_seg(webhook_id)}/deliveries",
            status=status,
            page=page,
            page_size=page_size,
        )

    def test_webhook(self, webhook_id: Id) -> JSON:
        """Send a `webhook.test` event to this webhook (202); see `webhook_deliveries`."""
        return self._post(f"/api/v1/webhooks/{_seg(webhook_id)}/test", {})

    # WebSockets (CONTRACT section 9)

    def events(
        self, path: str, last_event_id: str | int | None = None, **options: Any
    ) -> EventStream:
        """The events of a stream (`/ws/agents/<id>`, `/ws/sessions`, ...), reconnecting
        with the last event id after a drop. Iterate it; `close()` it from any thread."""
        return EventStream(self.ws_url, path, self.token, last_event_id, **options)


MAX_LOG_LINES_PER_BATCH = 1000
MAX_LOG_BATCH_BYTES = 256 * 1024
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def printable_text(text: str) -> str:
    """`text` with NUL and lone surrogates (which no UTF-8 can carry) as U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def _body(**fields: Any) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


def _list(values: Iterable | None) -> list | None:
    return None if values is None else [str(v) for v in values]


def _time(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def _seg(value: Id) -> str:
    return quote(str(value), safe="")
