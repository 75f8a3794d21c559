"""Who may open which WebSocket stream, and how many at once (CONTRACT sections 7, 8).

Checked before the upgrade, so a refusal is a plain HTTP answer with the contract's body:
401 for a missing (production) or bad token, 403 for a stream the token may not read,
429 for one connection too many. The token comes as `Authorization: Bearer` or `?token=`.

Connections are counted per client (the token's `sub`, else the remote address) across
processes with leases in Redis: a sorted set of connection ids scored by lease expiry.
A live connection renews its lease; one whose process died stops renewing, and its slot
is free again within `LEASE_SECONDS`.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis as redis_lib
from flask import Response, current_app, g, request

from orchestrator_api import auth
from orchestrator_api.errors import error_response
from shared.errors import Unauthorized

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
RENEW_SECONDS = 20
KEY_PREFIX = "orchestrator:ws-leases:"

# Drop expired leases, then take one if the client is under its limit.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class Lease:
    def __init__(self, client: redis_lib.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self.member = uuid.uuid4().hex
        self.renewed_at = 0.0

    def acquire(self, limit: int) -> bool:
        now = time.time()
        self.renewed_at = now
        taken = self.client.eval(
            _ACQUIRE, 1, self.key, now, now + LEASE_SECONDS, limit, self.member, 2 * LEASE_SECONDS
        )
        return bool(taken)

    def renew_if_due(self) -> None:
        now = time.time()
        if now - self.renewed_at < RENEW_SECONDS:
            return
        self.renewed_at = now
        try:
            self.client.zadd(self.key, {self.member: now + LEASE_SECONDS}, xx=True)
            self.client.expire(self.key, 2 * LEASE_SECONDS)
        except redis_lib.RedisError as exc:
            log.warning("websocket lease not renewed: %s", exc.__class__.__name__)

    def release(self) -> None:
        try:
            self.client.zrem(self.key, self.member)
        except redis_lib.RedisError as exc:
            log.warning("websocket lease not released (it expires): %s", exc.__class__.__name__)


def _stream_allowed(principal: auth.Principal, path: str) -> bool:
    if principal.role in ("admin", "operator", "viewer"):
        return True
    if principal.role == "agent" and principal.agent_id is not None:
        return path == f"/ws/agents/{principal.agent_id}"
    return False


def check_handshake() -> Response | None:
    """The blueprint's before_request: authenticate, authorise, and take a lease."""
    ext = current_app.extensions["orchestrator"]
    try:
        token = auth.bearer_token(request.headers.get("Authorization")) or request.args.get("token")
        principal = auth.authenticate(token) if token else None
    except Unauthorized as exc:
        return error_response(401, "UNAUTHORIZED", exc.message)
    if principal is None:
        if ext.settings.is_production:
            return error_response(401, "UNAUTHORIZED", "A bearer token is required")
        principal = auth.ANONYMOUS
    if not _stream_allowed(principal, request.path):
        return error_response(403, "FORBIDDEN", "This token may not read this stream")
    client = auth.client_key(principal)
    lease = Lease(ext.redis, KEY_PREFIX + client)
    limit = ext.settings.ws_max_connections_per_client
    try:
        if not lease.acquire(limit):
            return error_response(
                429,
                "RATE_LIMITED",
                f"At most {limit} concurrent WebSocket connections per client",
                headers={"Retry-After": str(RENEW_SECONDS)},
            )
    except redis_lib.RedisError as exc:
        log.warning("websocket connection limit not checked (Redis: %s)", exc.__class__.__name__)
        return None
    g.ws_lease = lease
    return None


def renew_lease() -> None:
    lease = g.get("ws_lease")
    if lease is not None:
        lease.renew_if_due()


def release_lease(_exc: BaseException | None = None) -> None:
    lease = g.pop("ws_lease", None)
    if lease is not None:
        lease.release()
