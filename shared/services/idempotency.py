"""Idempotent POSTs: the same key and request within 24 hours get the first answer.

Keys belong to a client (orchestrator_api/auth.py `client_key`). A request is the same
when its method, path and query, and body are: the body as parsed JSON (canonical form:
sorted keys, no whitespace), so the same JSON written differently is the same request.
Answers are stored to be replayed; no secret is ever among them (the API strips an agent's
token before recording a registration, and mints a fresh one on replay).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.errors import Conflict

TTL_HOURS = 24
HEADER = "Idempotency-Key"
NOT_JSON = object()  # fingerprint: a body that is not JSON (compared as bytes)


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: str


class Mismatch(Conflict):
    """The key was used for a different request: 409 CONFLICT."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{HEADER} {key!r} was already used for a different request")
        self.key = key


def canonical_json(value: Any) -> bytes:
    """One spelling of a JSON value: sorted keys, no whitespace, ASCII (escaped), so
    whitespace, key order and escapes make no difference."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint(method: str, path: str, body: bytes, parsed: Any = NOT_JSON) -> str:
    """The request's identity: `parsed` is the body as JSON where it is JSON (compared in
    its canonical form), else the raw bytes are compared (in practice an empty body: the
    API refuses any other that is not JSON; unprefixed, as before the canonical form)."""
    content = body if parsed is NOT_JSON else b"json " + canonical_json(parsed)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + content).hexdigest()


def claim(db: Session, *, client: str, key: str, print_: str) -> Replay | None:
    """None: this request owns the key and runs (its answer is stored by `record`, in
    the same transaction). A Replay: the first answer. Mismatch: another request.

    A concurrent request with the same key waits on the first one's uncommitted row, then
    sees its answer."""
    params = {"client": client, "key": key, "print": print_}
    for _ in range(2):
        owned = db.execute(
            text(
                "INSERT INTO idempotency_keys (client, key, fingerprint) "
                "VALUES (:client, :key, :print) ON CONFLICT DO NOTHING RETURNING key"
            ),
            params,
        ).first()
        if owned:
            return None
        first = db.execute(
            text(
                "SELECT fingerprint, status_code, response_body, "
                f"created_at < now() - interval '{TTL_HOURS} hours' AS expired "
                "FROM idempotency_keys WHERE client = :client AND key = :key FOR UPDATE"
            ),
            params,
        ).first()
        if first is None:
            continue  # the first request rolled back meanwhile: try to own the key again
        if first.expired:
            db.execute(
                text(
                    "UPDATE idempotency_keys SET fingerprint = :print, status_code = NULL, "
                    "response_body = NULL, created_at = now() "
                    "WHERE client = :client AND key = :key"
                ),
                params,
            )
            return None
        if first.fingerprint != print_:
            raise Mismatch(key)
        return Replay(first.status_code, first.response_body)
    return None


def record(db: Session, *, client: str, key: str, status_code: int, body: str) -> None:
    db.execute(
        text(
            "UPDATE idempotency_keys SET status_code = :status, response_body = :body "
            "WHERE client = :client AND key = :key"
        ),
        {"client": client, "key": key, "status": status_code, "body": body},
    )


def prune(db: Session) -> int:
    return db.execute(
        text(
            f"DELETE FROM idempotency_keys WHERE created_at < now() - interval '{TTL_HOURS} hours'"
        )
    ).rowcount
