"""statistics indexes

Placeholder revision reserved for statistics indexes (filled in by that change); it changes nothing yet.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
