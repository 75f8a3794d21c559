"""agents kept as records

A deregistered agent stays a row (status OFFLINE, `deregistered_at` set), so its finished
tasks keep `assigned_agent_id` as the record of who did them; its name is free again, so
names are unique among live agents only. The agents table is small (one row per agent
ever registered): the column is nullable with no default (no rewrite) and the index swap
is quick; `lock_timeout` keeps a busy table from queueing the API behind this migration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("agents", sa.Column("deregistered_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("uq_agents_name", "agents", type_="unique")
    op.create_index(
        "uq_agents_live_name",
        "agents",
        ["name"],
        unique=True,
        postgresql_where=sa.text("deregistered_at IS NULL"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM agents WHERE deregistered_at IS NOT NULL")
    op.drop_index("uq_agents_live_name", table_name="agents")
    op.create_unique_constraint("uq_agents_name", "agents", ["name"])
    op.drop_column("agents", "deregistered_at")
