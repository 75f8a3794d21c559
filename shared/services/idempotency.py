"""Idempotent POSTs: the same key and request within 24 hours get the first answer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

TTL_HOURS = 24


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: str


class Mismatch(Exception):
    """The key was used for a different request."""


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


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
