"""outbox_events: NOTIFY orchestrator_outbox when a statement inserts events

The outbox relays (one thread per web process) LISTEN on this channel and publish at
once, instead of polling 50 times a second. A statement-level trigger, so a transaction
that records hundreds of events (or the heartbeat statement, which usually inserts none)
costs one check; PostgreSQL delivers the notification at commit, once per transaction
however many statements sent it, and not at all on rollback.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
        CREATE FUNCTION outbox_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM inserted) THEN
                PERFORM pg_notify('orchestrator_outbox', '');
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_events_notify ON outbox_events")
    op.execute("DROP FUNCTION outbox_events_notify()")
