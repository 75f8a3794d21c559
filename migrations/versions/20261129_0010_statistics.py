"""statistics: per-attempt failures, per-agent totals, the statistics indexes

- `task_failures`: one row per failed attempt and the agent whose attempt it was (the
  tasks table keeps only the last holder). Backfilled with what the tasks table still
  shows: the last failure of each task that failed for good while held by an agent.
  Earlier retryable failures were never kept and cannot be recovered.
- `agent_task_totals`: per agent, tasks completed and failures, kept by triggers on
  `tasks` and `task_failures` in the transaction of each change; the fleet summary reads
  it instead of scanning a million tasks.
- `session_status_counts`: sessions per pool, day of creation (UTC) and status, with the
  run time of the completed ones, kept by triggers on `sessions`; the session statistics
  add up these rows (plus, for `since`, that day's sessions through a covering index).
- Indexes, built CONCURRENTLY (no lock that blocks writes): an agent's completed tasks,
  and two covering indexes for the session statistics.

The backfill and the triggers are one transaction that holds `tasks` and `sessions` in
SHARE mode (writes wait, reads do not) so that nothing changes between the count and the
trigger; it reads through the new indexes, about a second at a million tasks. The
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

SESSION_RUN = """CASE WHEN {row}.status = 'COMPLETED' AND {row}.started_at IS NOT NULL
    AND {row}.completed_at IS NOT NULL
    THEN round(extract(epoch FROM {row}.completed_at - {row}.started_at) * 1000000)::bigint
    END"""

ADD_TO_SESSION_COUNTS = """
CREATE FUNCTION session_status_counts_add(
    p varchar, d date, s varchar, n integer, run_us bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF n > 0 THEN
        INSERT INTO session_status_counts AS c
            (pool, created_on, status, sessions, timed, run_microseconds)
        VALUES (p, d, s, 1, (run_us IS NOT NULL)::int, coalesce(run_us, 0))
        ON CONFLICT (pool, created_on, status) DO UPDATE
        SET sessions = c.sessions + 1, timed = c.timed + excluded.timed,
            run_microseconds = c.run_microseconds + excluded.run_microseconds;
    ELSE
        UPDATE session_status_counts AS c
        SET sessions = c.sessions - 1, timed = c.timed - (run_us IS NOT NULL)::int,
            run_microseconds = c.run_microseconds - coalesce(run_us, 0)
        WHERE c.pool = p AND c.created_on = d AND c.status = s;
    END IF;
END $$
"""

COUNT_SESSION = f"""
CREATE FUNCTION session_status_counts_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM session_status_counts_add(OLD.pool, (OLD.created_at AT TIME ZONE 'UTC')::date,
                                          OLD.status, -1, {SESSION_RUN.format(row="OLD")});
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM session_status_counts_add(NEW.pool, (NEW.created_at AT TIME ZONE 'UTC')::date,
                                          NEW.status, 1, {SESSION_RUN.format(row="NEW")});
    END IF;
    RETURN NULL;
END $$
"""

# TRUNCATE fires no row triggers: emptying a table empties what it was counted into.
ON_TRUNCATE = """
CREATE FUNCTION statistics_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'sessions' THEN
        DELETE FROM session_status_counts;
    ELSIF TG_TABLE_NAME = 'tasks' THEN
        UPDATE agent_task_totals SET tasks_completed = 0 WHERE tasks_completed <> 0;
    ELSE
        UPDATE agent_task_totals SET tasks_failed = 0 WHERE tasks_failed <> 0;
    END IF;
    RETURN NULL;
END $$
"""

# The WHEN clauses are evaluated without entering PL/pgSQL: updates that do not complete
# (or un-complete) a task cost nothing more.
TRUNCATED = ("sessions", "tasks", "task_failures")
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
    """CREATE TRIGGER sessions_counted AFTER INSERT OR DELETE ON sessions FOR EACH ROW
       EXECUTE FUNCTION session_status_counts_count()""",
    """CREATE TRIGGER sessions_recounted
       AFTER UPDATE OF status, pool, created_at, started_at, completed_at ON sessions
       FOR EACH ROW
       WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.pool IS DISTINCT FROM NEW.pool
             OR OLD.created_at IS DISTINCT FROM NEW.created_at
             OR OLD.started_at IS DISTINCT FROM NEW.started_at
             OR OLD.completed_at IS DISTINCT FROM NEW.completed_at)
       EXECUTE FUNCTION session_status_counts_count()""",
    *(
        f"""CREATE TRIGGER {table}_truncated AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION statistics_truncated()"""
        for table in TRUNCATED
    ),
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
    f"""INSERT INTO session_status_counts
           (pool, created_on, status, sessions, timed, run_microseconds)
        SELECT pool, (created_at AT TIME ZONE 'UTC')::date, status, count(*),
               count({SESSION_RUN.format(row="sessions")}),
               coalesce(sum({SESSION_RUN.format(row="sessions")}), 0)
        FROM sessions GROUP BY 1, 2, 3""",
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
    op.execute("LOCK TABLE tasks, sessions IN SHARE MODE")
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
    op.create_table(
        "session_status_counts",
        sa.Column("pool", sa.String(40), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("sessions", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("timed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("run_microseconds", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint(
            "pool", "created_on", "status", name=op.f("pk_session_status_counts")
        ),
    )
    op.create_index("ix_session_status_counts_created_on", "session_status_counts", ["created_on"])
    for statement in BACKFILL:
        op.execute(statement)
    functions = (
        ADD_TO_TOTALS,
        COUNT_COMPLETED,
        COUNT_FAILED,
        ADD_TO_SESSION_COUNTS,
        COUNT_SESSION,
        ON_TRUNCATE,
    )
    for statement in (*functions, *TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS task_failures_counted ON task_failures")
    for table in TRUNCATED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_truncated ON {table}")
    op.execute("DROP FUNCTION IF EXISTS statistics_truncated()")
    op.execute("DROP TRIGGER IF EXISTS sessions_counted ON sessions")
    op.execute("DROP TRIGGER IF EXISTS sessions_recounted ON sessions")
    op.drop_table("session_status_counts")
    op.execute("DROP FUNCTION IF EXISTS session_status_counts_count()")
    op.execute(
        "DROP FUNCTION IF EXISTS session_status_counts_add(varchar, date, varchar, integer, bigint)"
    )
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
