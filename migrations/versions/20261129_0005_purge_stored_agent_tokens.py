"""purge the agent tokens stored in idempotency answers

Registration answers were stored, to be replayed, with the new agent's 30-day token in
plain text. The API no longer stores it (it mints a fresh one on replay); this removes
those already stored: the top-level `token` of every stored answer (where only a
registration answer has one; a `token` deeper down, in a task's result say, is the
client's own data) is dropped, so a replay gets a freshly minted token. Nothing is
restored on downgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 00:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT client, key, response_body FROM idempotency_keys "
            "WHERE strpos(response_body, '\"token\"') > 0"
        ),
    ).all()
    for client, key, body in rows:
        stripped = _without_token(body)
        if stripped is not None:
            connection.execute(
                sa.text(
                    "UPDATE idempotency_keys SET response_body = :body "
                    "WHERE client = :client AND key = :key"
                ),
                {"client": client, "key": key, "body": stripped},
            )


def _without_token(body: str) -> str | None:
    """The answer without its top-level token; None when it has none."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None  # not JSON: not an answer of the API
    if not isinstance(answer, dict) or "token" not in answer:
        return None
    del answer["token"]
    return json.dumps(answer, separators=(",", ":")) + "\n"  # as jsonify writes it


def downgrade() -> None:
    pass  # the tokens are gone for good; nothing to undo
