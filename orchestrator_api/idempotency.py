"""`Idempotency-Key` on any POST under /api/v1 (CONTRACT section 6).

The key is claimed in the request's own transaction before the view runs, and the answer
is stored in that transaction just before it commits (orchestrator_api/database.py): a
crash between the change and the record cannot happen, so a retry never creates twice.
Error answers are not stored (their transaction rolls back), so a retry runs again.

Keys belong to `auth.client_key` (an agent's keys are never a person's). No secret is
stored: a registration answer is recorded without the agent's token, and its replay
carries a token minted afresh for that agent.
"""

from __future__ import annotations

import json
import re

from flask import Response, g, request

from orchestrator_api import auth
from orchestrator_api.database import before_commit, db
from orchestrator_api.errors import error_response
from shared.services import idempotency

HEADER = idempotency.HEADER
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # 1-255 visible characters
# Answers that carry a bearer token, by endpoint: the field, stripped before the answer
# is stored and minted again (for the answer's agent `id`) when it is replayed.
SECRET_FIELDS = {auth.REGISTER_ENDPOINT: "token"}


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
    client = auth.client_key(auth.resolve_principal())
    print_ = idempotency.fingerprint(
        request.method, request.full_path, request.get_data(), _parsed_body()
    )
    # Mismatch (409 CONFLICT) is a domain error: orchestrator_api/errors.py answers it
    replay = idempotency.claim(db(), client=client, key=key, print_=print_)
    if replay is None:
        g.idempotency = (client, key)
        before_commit(record_answer)
        return None
    body = _with_secret(replay.body)
    response = Response(body, status=replay.status_code, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _parsed_body():
    """The body as JSON (already parsed and checked by request_body.py), if it is JSON."""
    if not request.get_data(cache=True):
        return idempotency.NOT_JSON
    parsed = request.get_json(silent=True)
    return idempotency.NOT_JSON if parsed is None else parsed


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
            body=_without_secret(response.get_data(as_text=True)),
        )


def _without_secret(body: str) -> str:
    field = SECRET_FIELDS.get(request.endpoint or "")
    if field is None:
        return body
    answer = json.loads(body)
    answer.pop(field, None)
    return _dumps(answer)


def _with_secret(body: str) -> str:
    field = SECRET_FIELDS.get(request.endpoint or "")
    if field is None or not body:
        return body
    answer = json.loads(body)
    if not isinstance(answer, dict) or "id" not in answer:
        return body
    answer[field] = auth.mint_agent_token(answer["id"], answer["pool"])
    return _dumps(answer)


def _dumps(answer: dict) -> str:
    return json.dumps(answer, separators=(",", ":")) + "\n"  # as jsonify writes it
