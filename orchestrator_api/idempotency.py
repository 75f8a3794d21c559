"""`Idempotency-Key` on any POST under /api/v1 (CONTRACT section 6).

The key is claimed in the request's own transaction before the view runs, and the answer
is stored in that transaction just before it commits (orchestrator_api/database.py): a
crash between the change and the record cannot happen, so a retry never creates twice.
Error answers are not stored (their transaction rolls back), so a retry runs again.
"""

from __future__ import annotations

import re

from flask import Response, g, request

from orchestrator_api import auth
from orchestrator_api.database import before_commit, db
from orchestrator_api.errors import error_response
from shared.errors import Unauthorized
from shared.services import idempotency

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # 1-255 visible characters


def _client() -> str:
    try:
        principal = auth.request_principal()
    except Unauthorized:
        principal = None
    if principal is not None and principal.sub is not None:
        return f"sub:{principal.sub}"
    return f"addr:{request.remote_addr}"


def check_request() -> Response | None:
    key = request.headers.get(HEADER)
    if key is None or request.method != "POST" or not auth.is_api_path(request.path):
        return None
    if not KEY_PATTERN.match(key):
        return error_response(
            400,
            "VALIDATION_ERROR",
            "Invalid input",
            {HEADER: ["Must be 1 to 255 visible characters."]},
        )
    client = _client()
    print_ = idempotency.fingerprint(request.method, request.full_path, request.get_data())
    try:
        replay = idempotency.claim(db(), client=client, key=key, print_=print_)
    except idempotency.Mismatch:
        return error_response(
            409, "CONFLICT", f"{HEADER} {key!r} was already used for a different request"
        )
    if replay is None:
        g.idempotency = (client, key)
        before_commit(record_answer)
        return None
    response = Response(replay.body, status=replay.status_code, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def record_answer(response: Response) -> None:
    """Called by the commit hook, in the transaction about to commit."""
    owned = g.pop("idempotency", None)
    if owned is not None and response.status_code < 400:
        client, key = owned
        idempotency.record(
            db(),
            client=client,
            key=key,
            status_code=response.status_code,
            body=response.get_data(as_text=True),
        )
