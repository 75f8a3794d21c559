"""Who may open which WebSocket stream, and how many at once (CONTRACT sections 7, 8).

Checked before the upgrade, so a refusal is a plain HTTP answer with the contract's body:
401 for a missing (production) or bad token, 403 for a stream the token may not read,
429 for one connection too many for the client, 503 when this process holds
`WS_MAX_CONNECTIONS_PER_PROCESS` sockets. The token comes as `Authorization: Bearer` or
`?token=`.

Each process counts its own sockets (`ProcessSlots`, no I/O): in all, at most
`WS_MAX_CONNECTIONS_PER_PROCESS` (each socket holds a request thread: gunicorn.conf.py gives
the process that many threads besides WEB_THREADS, which stay for HTTP), and per client at
most `WS_MAX_CONNECTIONS_PER_CLIENT`. Across processes, connections are counted per client
with leases in Redis: a sorted set of connection ids scored by lease expiry. A live
connection's lease is renewed (by one thread per process, `LeaseKeeper`, all of them in
one pipeline: ten thousand sockets must not each wake to renew); one whose process died
stops being renewed, and its slot is free again within `LEASE_SECONDS`. While Redis is
down, the process's own count is the bound (a client may then hold the limit in each
process), and a socket opened meanwhile takes its lease once Redis is back, so it counts
across processes again.
"""

from __future__ import annotations

import logging
import threading
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
# A socket opened while Redis was down tries to take its lease this often.
RETRY_SECONDS = 2
# A refusal because the process is full says to come back after this long (or elsewhere).
FULL_RETRY_SECONDS = 5
FULL_LOG_SECONDS = 60
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
        self.held = False  # in Redis: False while Redis was down since the handshake
        self.released = False

    def acquire(self, limit: int) -> bool:
        now = time.time()
        self.renewed_at = now
        taken = self.client.eval(
            _ACQUIRE, 1, self.key, now, now + LEASE_SECONDS, limit, self.member, 2 * LEASE_SECONDS
        )
        self.held = bool(taken)
        return self.held

    def due(self, now: float) -> bool:
        return now - self.renewed_at >= (RENEW_SECONDS if self.held else RETRY_SECONDS)

    def release(self) -> None:
        self.released = True
        try:
            self.client.zrem(self.key, self.member)
        except redis_lib.RedisError as exc:
            log.warning("websocket lease not released (it expires): %s", exc.__class__.__name__)


# Renew many leases: KEYS the clients' sets, ARGV[1] the new expiry, ARGV[2] the sets'
# TTL, ARGV[3..] the connection ids (one per key).
_RENEW = """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[1], ARGV[i + 2])
  redis.call('EXPIRE', key, ARGV[2])
end
return #KEYS
"""


class LeaseKeeper:
    """This process's open leases, renewed when due, a script call per BATCH of them
    every RETRY_SECONDS (one command to encode, not two per lease: at ten thousand
    sockets, building pipelines cost a third of a core); a socket opened while Redis was
    down (or whose lease lapsed) takes its lease then: the socket is open, so it counts,
    over the limit or not."""

    BATCH = 1000  # leases per round trip

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.leases: set[Lease] = set()
        self.thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self.lock:
            self.leases.add(lease)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="ws-leases", daemon=True)
                self.thread.start()

    def discard(self, lease: Lease) -> None:
        with self.lock:
            self.leases.discard(lease)

    def _run(self) -> None:
        while True:
            time.sleep(RETRY_SECONDS)
            try:
                self.renew_due()
            except Exception:
                log.exception("websocket leases not renewed")

    def renew_due(self) -> None:
        now = time.time()
        with self.lock:
            due = [lease for lease in self.leases if lease.due(now)]
        for start in range(0, len(due), self.BATCH):
            batch = due[start : start + self.BATCH]
            try:
                batch[0].client.eval(
                    _RENEW,
                    len(batch),
                    *(lease.key for lease in batch),
                    now + LEASE_SECONDS,
                    2 * LEASE_SECONDS,
                    *(lease.member for lease in batch),
                )
            except redis_lib.RedisError as exc:
                if any(lease.held for lease in batch):
                    log.warning("websocket leases not renewed: %s", exc.__class__.__name__)
                for lease in batch:
                    lease.renewed_at = now  # retried in RENEW_SECONDS, or RETRY_SECONDS
                return
            for lease in batch:
                lease.renewed_at = now
                lease.held = True
            # a socket that ended while its lease was being renewed: the renewal put the
            # lease back after its release took it out
            for lease in batch:
                if lease.released:
                    lease.release()


class ProcessSlots:
    """The WebSockets open in this process, in all and per client; checked and counted
    without I/O, so both bounds hold whatever Redis does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str, *, total: int, per_client: int) -> str | None:
        """None when taken, else what is full: "process" or "client"."""
        with self.lock:
            if self.open >= total:
                return "process"
            held = self.by_client.get(client, 0)
            if held >= per_client:
                return "client"
            self.open += 1
            self.by_client[client] = held + 1
            return None

    def give_back(self, client: str) -> None:
        with self.lock:
            self.open -= 1
            left = self.by_client.pop(client) - 1
            if left:
                self.by_client[client] = left


SLOTS = ProcessSlots()
LEASES = LeaseKeeper()
_full_logged_at = 0.0


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
        principal = auth.admit(auth.authenticate(token) if token else None, fresh=True)
    except Unauthorized as exc:
        return error_response(401, "UNAUTHORIZED", exc.message)
    g.stream_pools = principal.pools  # ws.py filters by them (None: every pool)
    g.stream_role = principal.role  # who may send heartbeats on an agent's stream
    if not _stream_allowed(principal, request.path):
        return error_response(403, "FORBIDDEN", "This token may not read this stream")
    client = auth.client_key(principal)
    limit = ext.settings.ws_max_connections_per_client
    total = ext.settings.ws_max_connections_per_process
    full = SLOTS.take(client, total=total, per_client=limit)
    if full == "process":
        return _process_full(total)
    if full == "client":
        return _client_full(limit)
    g.ws_slot = client  # given back by release_lease, whatever happens next
    lease = Lease(ext.redis, KEY_PREFIX + client)
    try:
        if not lease.acquire(limit):
            return _client_full(limit)
    except redis_lib.RedisError as exc:
        log.warning(
            "websocket connections counted in this process only (Redis: %s)",
            exc.__class__.__name__,
        )
    g.ws_lease = lease
    LEASES.add(lease)
    return None


def _client_full(limit: int) -> Response:
    return error_response(
        429,
        "RATE_LIMITED",
        f"At most {limit} concurrent WebSocket connections per client",
        headers={"Retry-After": str(RENEW_SECONDS)},
    )


def _process_full(total: int) -> Response:
    global _full_logged_at
    now = time.monotonic()
    if now - _full_logged_at > FULL_LOG_SECONDS:  # once a minute, not once per refusal
        _full_logged_at = now
        log.warning(
            "websocket refused: this process holds WS_MAX_CONNECTIONS_PER_PROCESS=%d", total
        )
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        f"This server holds its maximum of {total} WebSocket connections; retry later",
        headers={"Retry-After": str(FULL_RETRY_SECONDS)},
    )


def release_lease(_exc: BaseException | None = None) -> None:
    client = g.pop("ws_slot", None)
    if client is not None:
        SLOTS.give_back(client)
    lease = g.pop("ws_lease", None)
    if lease is not None:
        LEASES.discard(lease)
        lease.release()
