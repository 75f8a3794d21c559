"""task logs

What agents' commands print, per task (docs/API.md, "Task logs"): `task_logs`, the lines
numbered per task, and `task_log_state`, one row per task with a log (its last number,
its bytes, whether it was truncated, when the retention prune removed it). New tables
only: nothing existing is rewritten or locked.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_log_state",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("truncated", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_log_state_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_log_state")),
    )
    op.create_index(
        "ix_task_log_state_unpruned",
        "task_log_state",
        ["task_id"],
        postgresql_where="pruned_at IS NULL",
    )
    op.create_table(
        "task_logs",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=6), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "stream IN ('stdout', 'stderr', 'system')", name=op.f("ck_task_logs_stream")
        ),
        sa.PrimaryKeyConstraint("task_id", "seq", name=op.f("pk_task_logs")),
    )


def downgrade() -> None:
    op.drop_table("task_logs")
    op.drop_index("ix_task_log_state_unpruned", table_name="task_log_state")
    op.drop_table("task_log_state")
