"""Tokens scoped to pools (docs/API.md, "Pools and scoped tokens").

A token with a `pools` claim sees and acts only in those pools. One check, before every
/api/v1 view, covers every route: each id the request names (in its path, its query or
its JSON body) is resolved to its pool, and an id of another pool answers 404, exactly as
an id that does not exist; a pool named outright that the token may not use answers 403.
Lists are filtered by the views with `visible_pools()`, creations placed with
`creation_pool()`. A route with an id this module cannot resolve is refused to scoped
tokens (403) until a resolver is added: a new route cannot forget the check
(tests/api/test_pool_scope.py walks the OpenAPI spec).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import g, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator_api.database import db
from shared.errors import (
    AgentNotFound,
    Forbidden,
    OrchestratorError,
    SessionNotFound,
    TaskNotFound,
    WebhookNotFound,
)
from shared.models import Agent, Task, Webhook, WorkSession
from shared.pools import DEFAULT_POOL, known_pools

# A resolver's answer for an entity of every pool.
ALL_POOLS = "*"
# The pool of an entity by id (None: no such entity, the view answers 404 itself), and
# the error an id of another pool gets: the same as an unknown one.
Resolver = Callable[[Session, uuid.UUID], str | None]
RESOLVERS: dict[str, tuple[Resolver, Callable[[uuid.UUID], OrchestratorError]]] = {
    "session_id": (
        lambda s, i: s.scalar(select(WorkSession.pool).where(WorkSession.id == i)),
        lambda i: SessionNotFound(f"Session with ID {i} not found"),
    ),
    "task_id": (
        lambda s, i: s.scalar(
            select(WorkSession.pool)
            .join(Task, Task.session_id == WorkSession.id)
            .where(Task.id == i)
        ),
        lambda i: TaskNotFound(f"Task with ID {i} not found"),
    ),
    "agent_id": (
        lambda s, i: s.scalar(select(Agent.pool).where(Agent.id == i)),
        lambda i: AgentNotFound(f"Agent with ID {i} not found"),
    ),
    # A webhook without a pool hears every pool: not one for a token scoped to pools.
    "webhook_id": (
        lambda s, i: s.scalar(
            select(func.coalesce(Webhook.pool, ALL_POOLS)).where(Webhook.id == i)
        ),
        lambda i: WebhookNotFound(f"Webhook with ID {i} not found"),
    ),
}
# Path arguments that are not ids.
NOT_IDS = frozenset({"filename"})


def _scoped_pools() -> frozenset[str] | None:
    principal = getattr(g, "principal", None)
    return principal.pools if principal is not None else None


def visible_pools() -> frozenset[str] | None:
    """The pools this request may see: None for all (a token without the claim)."""
    return _scoped_pools()


def creation_pool(requested: str | None) -> str:
    """The pool a new session or agent goes in: the one asked for, if the token may use
    it; when none is asked for, the token's only pool (or `default`)."""
    allowed = _scoped_pools()
    if requested is None:
        if allowed is not None and len(allowed) == 1:
            return next(iter(allowed))
        requested = DEFAULT_POOL
    require_pool(requested)
    return requested


def require_pool(pool: str) -> None:
    allowed = _scoped_pools()
    if allowed is not None and pool not in allowed:
        raise Forbidden(
            f"This token may use the pools {', '.join(sorted(allowed))}; not {pool!r}"
            + ("" if pool != DEFAULT_POOL else " (name one of its pools)")
        )


def check_request() -> None:
    """Before the view, after authentication and the role table: raise 404 or 403 for
    anything of another pool that the request names."""
    allowed = _scoped_pools()
    if allowed is None:
        return
    for name, raw in (request.view_args or {}).items():
        if name in NOT_IDS:
            continue
        if name not in RESOLVERS:
            raise Forbidden(f"This route is not open to tokens scoped to pools ({name})")
        _check_id(name, raw, allowed)
    for name, raw in request.args.items():
        if name == "pool":
            require_pool(raw)
        elif name in RESOLVERS:
            _check_id(name, raw, allowed)
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        for name, value in body.items():
            if name == "pool" and isinstance(value, str):
                require_pool(value)
            elif name in RESOLVERS and isinstance(value, str):
                _check_id(name, value, allowed)


def _check_id(name: str, raw: str, allowed: frozenset[str]) -> None:
    try:
        entity_id = uuid.UUID(raw)
    except (ValueError, TypeError, AttributeError):
        return  # malformed: the view answers 400
    resolver, not_found = RESOLVERS[name]
    pool = known_pools.get((name, entity_id))
    if pool is None:  # asked once per id and process: a pool never changes
        pool = resolver(db(), entity_id)
        if pool is not None:
            known_pools.remember((name, entity_id), pool)
    if pool is not None and (pool == ALL_POOLS or pool not in allowed):
        raise not_found(entity_id)
