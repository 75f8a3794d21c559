"""Task logs (docs/API.md, "Task logs"): what an agent's command prints, per task.

Appending never locks the task row (assignment, the lifecycle and the sweeps lock it):
the holder is checked on a plain read, and the per-task count (last number, bytes,
truncated) lives in its own `task_log_state` row, locked only by appends to that task.
One `task.log` event per accepted batch carries the first lines, bounded, so a stream
subscriber follows without polling; the rest is read with `read`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from shared import events
from shared.errors import Conflict, Forbidden, PayloadTooLarge, TaskNotFound
from shared.models import Task, TaskLogLine, TaskLogState
from shared.models.types import utcnow
from shared.states import FINISHED_TASK_STATUSES, HELD_TASK_STATUSES

MAX_LINES_PER_BATCH = 1000
MAX_BATCH_BYTES = 256 * 1024  # UTF-8 bytes of the lines' text, per request
MAX_PAGE = 1000
DEFAULT_PAGE = 500
EVENT_TEXT_BYTES = 32 * 1024  # of the lines a task.log event carries
PRUNE_BATCH_TASKS = 50
PRUNE_MAX_BATCHES = 20


def check_batch(lines: list[dict[str, Any]]) -> None:
    """PayloadTooLarge past the batch limits: more than MAX_LINES_PER_BATCH lines or
    MAX_BATCH_BYTES of text."""
    if len(lines) > MAX_LINES_PER_BATCH:
        raise PayloadTooLarge(
            f"A log batch holds at most {MAX_LINES_PER_BATCH} lines ({len(lines)} sent)"
        )
    size = sum(len(str(line.get("text", "")).encode("utf-8", "replace")) for line in lines)
    if size > MAX_BATCH_BYTES:
        raise PayloadTooLarge(
            f"A log batch holds at most {MAX_BATCH_BYTES} bytes of text ({size} sent)"
        )


def append(
    db: Session,
    *,
    task_id: uuid.UUID,
    agent_id: uuid.UUID | None,
    lines: list[dict[str, Any]],
    max_bytes: int,
) -> dict[str, Any]:
    """Store `lines` (each `stream`, `text`, optional `at`) after the task's last line.
    Only the agent holding the task (ASSIGNED or IN_PROGRESS) appends: another agent
    (or none) is Forbidden, a finished task is a Conflict. Past `max_bytes` of text the
    rest is dropped and one `system` line says so. Answers `accepted`, `dropped`,
    `truncated`, `last_seq`."""
    check_batch(lines)
    task = db.execute(
        select(Task.session_id, Task.status, Task.assigned_agent_id).where(Task.id == task_id)
    ).first()
    if task is None:
        raise TaskNotFound(f"Task with ID {task_id} not found")
    if task.status in FINISHED_TASK_STATUSES:
        raise Conflict(f"Task {task_id} is {task.status.value}: its log takes no more lines")
    if agent_id is None or task.status not in HELD_TASK_STATUSES:
        raise Forbidden("Only the agent holding the task writes its log")
    if task.assigned_agent_id != agent_id:
        raise Forbidden(f"Task {task_id} is not held by agent {agent_id}")

    state = _locked_state(db, task_id)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    room = max_bytes - state.bytes
    added = 0
    truncated = state.truncated
    if not truncated:
        for line in lines:
            size = len(line["text"].encode("utf-8"))
            if size > room:
                truncated = True
                break
            room -= size
            added += size
            rows.append(_row(task_id, state.last_seq + len(rows) + 1, line, now))
        if truncated:
            marker = {
                "stream": "system",
                "text": f"[log truncated: TASK_LOG_MAX_BYTES ({max_bytes} bytes) reached; "
                "later lines were dropped]",
            }
            rows.append(_row(task_id, state.last_seq + len(rows) + 1, marker, now))
    accepted = len(rows) - (1 if truncated and not state.truncated else 0)
    if rows:
        db.execute(TaskLogLine.__table__.insert(), rows)
        db.execute(
            update(TaskLogState)
            .where(TaskLogState.task_id == task_id)
            .values(last_seq=rows[-1]["seq"], bytes=state.bytes + added, truncated=truncated)
        )
        events.record(
            db, events.TASK_LOG, **_event_payload(task_id, task.session_id, rows, truncated)
        )
    return {
        "accepted": accepted,
        "dropped": len(lines) - accepted,
        "truncated": truncated,
        "last_seq": rows[-1]["seq"] if rows else state.last_seq,
    }


def _locked_state(db: Session, task_id: uuid.UUID) -> TaskLogState:
    """The task's log state row, created on the first append, locked until the commit
    (appends to one task apply one after the other; nothing else waits on this row)."""
    db.execute(pg_insert(TaskLogState).values(task_id=task_id).on_conflict_do_nothing())
    return db.execute(
        select(TaskLogState)
        .where(TaskLogState.task_id == task_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _row(task_id: uuid.UUID, seq: int, line: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "seq": seq,
        "stream": line["stream"],
        "text": line["text"],
        "at": line.get("at") or now,
    }


def _event_payload(
    task_id: uuid.UUID, session_id: uuid.UUID, rows: list[dict[str, Any]], truncated: bool
) -> dict[str, Any]:
    """The batch's seq range and its first lines, up to EVENT_TEXT_BYTES of text (at
    least one line, cut to that size): `more` says the rest is to be read with GET."""
    lines = []
    size = 0
    more = False
    for row in rows:
        text = row["text"]
        encoded = len(text.encode("utf-8"))
        if lines and size + encoded > EVENT_TEXT_BYTES:
            more = True
            break
        if encoded > EVENT_TEXT_BYTES:
            text = text.encode("utf-8")[:EVENT_TEXT_BYTES].decode("utf-8", "ignore")
            more = True
        size += encoded
        lines.append({"seq": row["seq"], "stream": row["stream"], "text": text, "at": row["at"]})
    return {
        "task_id": task_id,
        "session_id": session_id,
        "first_seq": rows[0]["seq"],
        "last_seq": rows[-1]["seq"],
        "lines": lines,
        "more": more,
        "truncated": truncated,
    }


def read(
    db: Session, *, task_id: uuid.UUID, after: int = 0, limit: int = DEFAULT_PAGE
) -> dict[str, Any]:
    """The task's lines numbered after `after`, oldest first, at most `limit`."""
    status = db.execute(select(Task.status).where(Task.id == task_id)).scalar_one_or_none()
    if status is None:
        raise TaskNotFound(f"Task with ID {task_id} not found")
    state = db.get(TaskLogState, task_id)
    rows = db.execute(
        select(TaskLogLine.seq, TaskLogLine.stream, TaskLogLine.text, TaskLogLine.at)
        .where(TaskLogLine.task_id == task_id, TaskLogLine.seq > after)
        .order_by(TaskLogLine.seq)
        .limit(limit + 1)
    ).all()
    items = [row._asdict() for row in rows[:limit]]
    return {
        "items": items,
        "next_after": items[-1]["seq"] if items else after,
        "has_more": len(rows) > limit,
        "last_seq": state.last_seq if state else 0,
        "truncated": bool(state and state.truncated),
        "pruned": bool(state and state.pruned_at),
        "finished": status in FINISHED_TASK_STATUSES,
    }


def prune(db: Session, *, retention_seconds: int, now: datetime | None = None) -> int:
    """Delete the logs of up to PRUNE_BATCH_TASKS tasks finished more than
    `retention_seconds` ago (their state row stays, `pruned_at` set). How many."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=retention_seconds)
    task_ids = list(
        db.scalars(
            select(TaskLogState.task_id)
            .join(Task, Task.id == TaskLogState.task_id)
            .where(
                TaskLogState.pruned_at.is_(None),
                Task.status.in_(FINISHED_TASK_STATUSES),
                Task.completed_at < cutoff,
            )
            .limit(PRUNE_BATCH_TASKS)
            .with_for_update(of=TaskLogState, skip_locked=True)
        )
    )
    if task_ids:
        db.execute(delete(TaskLogLine).where(TaskLogLine.task_id.in_(task_ids)))
        db.execute(
            update(TaskLogState).where(TaskLogState.task_id.in_(task_ids)).values(pruned_at=now)
        )
    return len(task_ids)
