"""statistics: per-attempt failures, per-agent totals, the statistics indexes

- `task_failures`: one row per failed attempt and the agent whose attempt it was (the
  tasks table keeps only the last holder). Backfilled with what the tasks table still
  shows: the last failure of each task that failed for good while held by an agent.
  Earlier retryable failures were never kept and cannot be recovered.
- `agent_task_totals`: per agent, tasks completed and failures, kept by triggers on
  `tasks` and `task_failures` in the transaction of each change; the fleet summary reads
  it instead of scanning a million tasks.
- Indexes, built CONCURRENTLY (no lock that blocks writes): an agent's completed tasks,
  and two covering indexes for the session statistics.

The backfill and the triggers are one transaction that holds `tasks` in SHARE mode
(writes wait, reads do not) so that no task completes between the count and the trigger;
it reads through the new partial index, a fraction of a second at a million tasks. The
lock is asked with `lock_timeout`, so a long transaction makes the migration fail fast
instead of queueing the API behind it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATS_COLUMNS = ["status", "started_at", "completed_at"]

# A negative change only updates an existing row: a row being deleted with its agent
# (ON DELETE CASCADE) is never inserted again.
ADD_TO_TOTALS = """
CREATE FUNCTION agent_task_totals_add(agent uuid, completed integer, failed integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF completed >= 0 AND failed >= 0 THEN
        INSERT INTO agent_task_totals AS t (agent_id, tasks_completed, tasks_failed)
        VALUES (agent, completed, failed)
        ON CONFLICT (agent_id) DO UPDATE
        SET tasks_completed = t.tasks_completed + excluded.tasks_completed,
            tasks_failed = t.tasks_failed + excluded.tasks_failed;
    ELSE
        UPDATE agent_task_totals
        SET tasks_completed = tasks_completed + completed, tasks_failed = tasks_failed + failed
        WHERE agent_id = agent;
    END IF;
END $$
"""

COUNT_COMPLETED = """
CREATE FUNCTION agent_task_totals_count_completed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE')
            AND OLD.status = 'COMPLETED' AND OLD.assigned_agent_id IS NOT NULL THEN
        PERFORM agent_task_totals_add(OLD.assigned_agent_id, -1, 0);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT')
            AND NEW.status = 'COMPLETED' AND NEW.assigned_agent_id IS NOT NULL THEN
        PERFORM agent_task_totals_add(NEW.assigned_agent_id, 1, 0);
    END IF;
    RETURN NULL;
END $$
"""

COUNT_FAILED = """
CREATE FUNCTION agent_task_totals_count_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM agent_task_totals_add(OLD.agent_id, 0, -1);
    ELSE
        PERFORM agent_task_totals_add(NEW.agent_id, 0, 1);
    END IF;
    RETURN NULL;
END $$
"""

# The WHEN clauses are evaluated without entering PL/pgSQL: updates that do not complete
# (or un-complete) a task cost nothing more.
TRIGGERS = [
    """CREATE TRIGGER tasks_completed_insert AFTER INSERT ON tasks FOR EACH ROW
       WHEN (NEW.status = 'COMPLETED' AND NEW.assigned_agent_id IS NOT NULL)
       EXECUTE FUNCTION agent_task_totals_count_completed()""",
    """CREATE TRIGGER tasks_completed_update AFTER UPDATE OF status ON tasks FOR EACH ROW
       WHEN (OLD.status IS DISTINCT FROM NEW.status
             AND (OLD.status = 'COMPLETED' OR NEW.status = 'COMPLETED'))
       EXECUTE FUNCTION agent_task_totals_count_completed()""",
    """CREATE TRIGGER tasks_completed_delete AFTER DELETE ON tasks FOR EACH ROW
       WHEN (OLD.status = 'COMPLETED' AND OLD.assigned_agent_id IS NOT NULL)
       EXECUTE FUNCTION agent_task_totals_count_completed()""",
    """CREATE TRIGGER task_failures_counted AFTER INSERT OR DELETE ON task_failures
       FOR EACH ROW EXECUTE FUNCTION agent_task_totals_count_failed()""",
]

BACKFILL = [
    """INSERT INTO task_failures (task_id, attempt, agent_id, failed_at)
       SELECT id, attempts, assigned_agent_id, coalesce(completed_at, updated_at)
       FROM tasks
       WHERE status = 'FAILED' AND assigned_agent_id IS NOT NULL AND attempts > 0""",
    """INSERT INTO agent_task_totals (agent_id, tasks_completed, tasks_failed)
       SELECT agent_id, sum(completed), sum(failed)
       FROM (
           SELECT assigned_agent_id AS agent_id, count(*) AS completed, 0 AS failed
           FROM tasks WHERE status = 'COMPLETED' AND assigned_agent_id IS NOT NULL
           GROUP BY assigned_agent_id
           UNION ALL
           SELECT agent_id, 0, count(*) FROM task_failures GROUP BY agent_id
       ) AS counts
       GROUP BY agent_id""",
]


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tasks_completed_by_agent",
            "tasks",
            ["assigned_agent_id"],
            postgresql_where=sa.text("status = 'COMPLETED'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_sessions_statistics_created_at",
            "sessions",
            ["created_at"],
            postgresql_include=STATS_COLUMNS,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_sessions_statistics_pool_created_at",
            "sessions",
            ["pool", "created_at"],
            postgresql_include=STATS_COLUMNS,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    op.execute("SET LOCAL lock_timeout = '1s'")
    op.execute("LOCK TABLE tasks IN SHARE MODE")
    op.create_table(
        "task_failures",
        sa.Column(
            "task_id",
            sa.Uuid(),
            sa.ForeignKey(
                "tasks.id", ondelete="CASCADE", name=op.f("fk_task_failures_task_id_tasks")
            ),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "agent_id",
            sa.Uuid(),
            sa.ForeignKey(
                "agents.id", ondelete="CASCADE", name=op.f("fk_task_failures_agent_id_agents")
            ),
            nullable=False,
        ),
        sa.Column(
            "failed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_task_failures")),
    )
    op.create_index("ix_task_failures_agent_id", "task_failures", ["agent_id"])
    op.create_table(
        "agent_task_totals",
        sa.Column(
            "agent_id",
            sa.Uuid(),
            sa.ForeignKey(
                "agents.id", ondelete="CASCADE", name=op.f("fk_agent_task_totals_agent_id_agents")
            ),
            nullable=False,
        ),
        sa.Column("tasks_completed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tasks_failed", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "tasks_completed >= 0", name=op.f("ck_agent_task_totals_tasks_completed")
        ),
        sa.CheckConstraint("tasks_failed >= 0", name=op.f("ck_agent_task_totals_tasks_failed")),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_task_totals")),
    )
    for statement in BACKFILL:
        op.execute(statement)
    for statement in (ADD_TO_TOTALS, COUNT_COMPLETED, COUNT_FAILED, *TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS task_failures_counted ON task_failures")
    for name in ("tasks_completed_insert", "tasks_completed_update", "tasks_completed_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON tasks")
    op.drop_table("agent_task_totals")
    op.drop_table("task_failures")
    op.execute("DROP FUNCTION IF EXISTS agent_task_totals_count_failed()")
    op.execute("DROP FUNCTION IF EXISTS agent_task_totals_count_completed()")
    op.execute("DROP FUNCTION IF EXISTS agent_task_totals_add(uuid, integer, integer)")
    op.drop_index("ix_sessions_statistics_pool_created_at", table_name="sessions")
    op.drop_index("ix_sessions_statistics_created_at", table_name="sessions")
    op.drop_index("ix_tasks_completed_by_agent", table_name="tasks")
