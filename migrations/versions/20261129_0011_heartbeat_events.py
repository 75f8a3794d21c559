"""agents.heartbeat_event_at: when the agent's last agent.heartbeat event was recorded

Heartbeat events are coalesced (issue 18): one is recorded when the agent's status or
current_load changes, otherwise at most once per HEARTBEAT_EVENT_INTERVAL_SECONDS; the
heartbeat statement reads and sets this column. Nullable without a default: adding it
rewrites nothing and takes its lock for an instant. NULL: no event yet (the next
heartbeat records one).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("agents", sa.Column("heartbeat_event_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("agents", "heartbeat_event_at")
