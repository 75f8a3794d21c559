"""Who may call what under /api/v1 (CONTRACT section 7).

A before_request hook verifies the bearer token (shared/tokens.py), keeps the principal on
`flask.g`, and applies the role table:

- admin, operator: every /api/v1 route;
- viewer: GET (and HEAD, OPTIONS) only;
- agent with `agent_id`: its own agent (GET, DELETE, heartbeat, its tasks), the tasks
  assigned to it (GET, start, complete, fail, progress, logs) and `GET /tasks?agent_id=<own>`;
- agent without `agent_id`: `POST /api/v1/agents/register` only.

Without a token: 401 in production; in development, an anonymous principal with the rights
of an admin. A token that is sent must be valid in both modes. `authenticate` is the
check itself, for callers other than this hook (WebSockets).

Budgets and keys belong to an identity, `client_key`: an agent token's agent
(`agent:<agent_id>`, whatever its `sub`), else a person's `sub`, else the remote address.
Rate limits (limits.py), Idempotency-Keys (idempotency.py) and WebSocket leases
(ws_access.py) all use it, so an agent named "alice" is never the operator alice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from apispec import BasePlugin
from flask import Flask, Response, current_app, g, request
from sqlalchemy import select

from orchestrator_api import pool_scope
from orchestrator_api.database import db
from orchestrator_api.errors import error_response, handle_domain_error
from shared import tokens
from shared.config import Settings
from shared.errors import Forbidden, OrchestratorError, Unauthorized
from shared.models import Task
from shared.services import agents as agent_service

API_PREFIX = "/api/v1"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FULL_ACCESS_ROLES = frozenset({"admin", "operator"})

# An agent with agent_id: routes on its own agent (path parameter `agent_id`) ...
AGENT_SELF_ENDPOINTS = frozenset({"agents.AgentById", "agents.heartbeat", "agents.agent_tasks"})
# ... and routes on a task, allowed when the task is assigned to it (path `task_id`).
AGENT_TASK_ENDPOINTS = frozenset(
    {
        "tasks.TaskById",
        "tasks.task_events",
        "tasks.start_task",
        "tasks.complete_task",
        "tasks.fail_task",
        "tasks.report_progress",
        "task_logs.TaskLogs",  # reading and appending (appending: only the holder)
    }
)
AGENT_TASK_LIST_ENDPOINT = "tasks.Tasks"
REGISTER_ENDPOINT = "agents.register_agent"


@dataclass(frozen=True)
class Principal:
    role: str
    sub: str | None = None  # None: anonymous (development without a token)
    agent_id: uuid.UUID | None = None
    # The pools the token sees and acts in (orchestrator_api/pool_scope.py); None: all.
    pools: frozenset[str] | None = None

    @property
    def anonymous(self) -> bool:
        return self.sub is None


ANONYMOUS = Principal(role="admin")


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when none was sent."""
    if header is None or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'")
    return token.strip()


def authenticate(token: str, settings: Settings | None = None) -> Principal:
    """The principal of a token, or Unauthorized. For any transport (HTTP, WebSocket)."""
    settings = settings or current_app.extensions["orchestrator"].settings
    claims = tokens.verify(
        token, key=settings.secret_key, max_ttl_seconds=settings.token_max_ttl_seconds
    )
    return Principal(role=claims.role, sub=claims.sub, agent_id=claims.agent_id, pools=claims.pools)


def client_key(principal: Principal | None) -> str:
    """The identity a request or socket counts against: rate limits, Idempotency-Keys and
    WebSocket leases. `principal` None (no token, or a refused one) or anonymous: the
    remote address of the running request."""
    if principal is not None and principal.agent_id is not None:
        return f"agent:{principal.agent_id}"  # tokens.agent_sub, even for an older token
    if principal is not None and principal.sub is not None:
        return f"sub:{principal.sub}"
    return f"addr:{request.remote_addr or 'unknown'}"


def resolve_principal() -> Principal | None:
    """This request's principal for counting and keying: None without a token or with a
    bad one (which then counts against its address; the hook answers 401)."""
    try:
        return request_principal()
    except Unauthorized:
        return None


def mint_agent_token(agent_id: uuid.UUID | str, pool: str) -> str:
    """The token a registration answer carries: the agent acting as itself, in its pool."""
    settings = current_app.extensions["orchestrator"].settings
    return tokens.mint_agent(
        key=settings.secret_key,
        agent_id=agent_id,
        max_ttl_seconds=settings.token_max_ttl_seconds,
        pools=[pool],
    )


def request_principal() -> Principal | None:
    """The principal of this request's token, verified once per request (the rate limiter
    asks first); None without a token; Unauthorized for a bad one."""
    if "auth_result" not in g:
        try:
            token = bearer_token(request.headers.get("Authorization"))
            g.auth_result = authenticate(token) if token else None
        except Unauthorized as exc:
            g.auth_result = exc
    if isinstance(g.auth_result, Unauthorized):
        raise Unauthorized(g.auth_result.message)
    return g.auth_result


def current_principal() -> Principal:
    """The caller of the running /api/v1 view (set by the hook)."""
    return g.principal


def acting_agent(claimed: uuid.UUID | None) -> uuid.UUID | None:
    """The agent a task lifecycle call acts as: an agent token's own agent (a different
    `agent_id` in the body is refused), else the optional `agent_id` of the body."""
    principal = current_principal()
    if principal.role != "agent":
        return claimed
    if claimed is not None and claimed != principal.agent_id:
        raise Forbidden("An agent token acts as its own agent; agent_id must be omitted or match")
    return principal.agent_id


def _unauthorized(message: str) -> Response:
    return error_response(
        401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": 'Bearer realm="orchestrator"'}
    )


class LiveAgents:
    """Whether an agent token's agent still exists (not deregistered), read on its own
    connection (the request's transaction stays unopened for the heartbeat's group
    commit) and remembered for a few seconds per process: a deregistered agent's token
    is refused at once here and within LIVE_AGENT_CACHE_SECONDS in other processes."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._until: dict[uuid.UUID, float] = {}

    def is_live(self, agent_id: uuid.UUID, *, fresh: bool = False) -> bool:
        """`fresh`: ask the database whatever is remembered (a WebSocket handshake)."""
        now = time.monotonic()
        if not fresh and self._until.get(agent_id, 0.0) > now:
            return True
        database = current_app.extensions["orchestrator"].database
        with database.session() as session:
            live = agent_service.is_live(session, agent_id=agent_id)
        if not live:
            self._until.pop(agent_id, None)
            return False
        if len(self._until) > 100_000:
            self._until.clear()
        self._until[agent_id] = now + self.ttl
        return True

    def forget(self, agent_id: uuid.UUID) -> None:
        self._until.pop(agent_id, None)


live_agents = LiveAgents()


def admit(principal: Principal | None, *, fresh: bool = False) -> Principal:
    """The rule of who may call at all, for HTTP and WebSocket alike: without a token, 401
    in production and the anonymous principal in development; an agent token whose agent
    was deregistered, 401 (`fresh`: ask the database, not the cache)."""
    settings = current_app.extensions["orchestrator"].settings
    if principal is None:
        if settings.is_production:
            raise Unauthorized("A bearer token is required")
        return ANONYMOUS
    if principal.agent_id is not None and not live_agents.is_live(principal.agent_id, fresh=fresh):
        raise Unauthorized(
            f"Agent {principal.agent_id} no longer exists (deregistered); "
            "register again for a new identity"
        )
    return principal


def check_request() -> Response | None:
    if not is_api_path(request.path):
        return None
    try:
        principal = admit(request_principal())
    except Unauthorized as exc:
        return _unauthorized(exc.message)
    g.principal = principal
    if request.routing_exception is not None:
        return None  # the router answers: 404 or 405
    try:
        authorize(principal)
        pool_scope.check_request()
    except OrchestratorError as exc:
        return handle_domain_error(exc)
    return None


def authorize(principal: Principal) -> None:
    """Forbidden unless the role table lets the principal call this route."""
    if principal.role in FULL_ACCESS_ROLES:
        return
    if principal.role == "viewer":
        if request.method not in READ_METHODS:
            raise Forbidden("A viewer token may only read")
        return
    endpoint = request.endpoint
    if principal.agent_id is None:
        if endpoint != REGISTER_ENDPOINT:
            raise Forbidden("An agent token without agent_id may only register an agent")
        return
    if not _agent_may(principal.agent_id, endpoint, request.view_args or {}):
        raise Forbidden("An agent token may only act on its own agent and its own tasks")


def _agent_may(agent_id: uuid.UUID, endpoint: str | None, args: dict) -> bool:
    if endpoint in AGENT_SELF_ENDPOINTS:
        return _uuid(args.get("agent_id")) == agent_id
    if endpoint in AGENT_TASK_ENDPOINTS:
        task_id = _uuid(args.get("task_id"))
        if task_id is None:
            return True  # the view answers 400 for a malformed id
        row = db().execute(select(Task.assigned_agent_id).where(Task.id == task_id)).first()
        # an unknown task: the view answers 404; the service checks again under the lock
        return row is None or row.assigned_agent_id == agent_id
    if endpoint == AGENT_TASK_LIST_ENDPOINT and request.method in READ_METHODS:
        return _uuid(request.args.get("agent_id")) == agent_id
    return False


def _uuid(raw: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


def register(app: Flask) -> None:
    app.before_request(check_request)


SECURITY_SCHEME = "bearerAuth"
# flask-smorest registers a response component, with the error body, for every status
ERROR_RESPONSES = {"401": "UNAUTHORIZED", "403": "FORBIDDEN", "429": "TOO_MANY_REQUESTS"}


class BearerAuthPlugin(BasePlugin):
    """OpenAPI: the bearer scheme, and on every /api/v1 operation its security and the
    401, 403 and 429 answers."""

    def init_spec(self, spec) -> None:
        super().init_spec(spec)
        spec.components.security_scheme(
            SECURITY_SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An HS256 JWT with the claims sub, role, exp, iat (and agent_id "
                "for an agent, whose sub is agent:<agent_id>), living at most "
                "TOKEN_MAX_TTL_SECONDS; `orchestrator token` mints one. Optional in "
                "development.",
            },
        )

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        if not path or not is_api_path(path):
            return
        for operation in (operations or {}).values():
            operation.setdefault("security", [{SECURITY_SCHEME: []}])
            responses = operation.setdefault("responses", {})
            for status, name in ERROR_RESPONSES.items():
                responses.setdefault(status, name)
