"""pools

Every session and agent belongs to a pool; existing rows land in `default`. Adding a
NOT NULL column with a constant default is a catalog change in PostgreSQL 11+ (no table
rewrite, whatever the size), under `lock_timeout` so a long transaction makes the
migration fail fast instead of queueing the API behind it; the indexes are built
CONCURRENTLY (no lock that blocks writes). Tasks carry no pool: theirs is their session's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '1s'")
    for table in ("sessions", "agents"):
        op.add_column(
            table, sa.Column("pool", sa.String(40), nullable=False, server_default="default")
        )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_sessions_pool_created_at",
            "sessions",
            ["pool", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_agents_pool_created_at",
            "agents",
            ["pool", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_index("ix_agents_pool_created_at", table_name="agents")
    op.drop_index("ix_sessions_pool_created_at", table_name="sessions")
    op.drop_column("agents", "pool")
    op.drop_column("sessions", "pool")
