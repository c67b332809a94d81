"""pg_stat_statements, read for the weekly query review: read only, under a statement_timeout,
never CREATE EXTENSION and never a reset (the operator does those; the hints say how).

Works as a non-superuser member of pg_read_all_stats (Supabase, Cloud SQL, RDS): the extension is
found in whatever schema it was created in (Supabase puts it in `extensions`), and its columns are
read from the catalog, so both the PostgreSQL 13+ names (total_exec_time) and the 9.4-12 ones
(total_time) work without guessing from the server version."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg import sql

from maint.config import DatabaseConfig
from maint.query_review import HIDDEN_TEXT, SNAPSHOT_FACTOR, TEXT_CHARS, QueryStat, StatementsReading
from maint.tasks.postgres.connection import connect

_EXTENSION = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

_COLUMNS = """
SELECT c.relname, a.attname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname IN ('pg_stat_statements', 'pg_stat_statements_info')
"""

# One row per queryid in this database, summed over the roles (and, on 14+, top-level and nested
# executions) that ran it; the rows this role may not see (queryid NULL) one per role instead.
# Only what the review and its snapshot need: the top by total time and the top by mean.
_STATEMENTS = """
WITH s AS (
  SELECT s.queryid, coalesce(r.rolname, s.userid::text) AS rolname, s.calls, s.{total} AS total_ms, s.rows,
         s.shared_blks_hit, s.shared_blks_read, s.temp_blks_read, s.temp_blks_written, s.query
  FROM {schema}.pg_stat_statements s
  LEFT JOIN pg_roles r ON r.oid = s.userid
  WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
), grouped AS (
  SELECT queryid, array_agg(DISTINCT rolname ORDER BY rolname) AS users, sum(calls)::bigint AS calls,
         sum(total_ms)::float8 AS total_ms, sum(rows)::bigint AS rows, sum(shared_blks_hit)::bigint AS hit,
         sum(shared_blks_read)::bigint AS read, sum(temp_blks_read)::bigint AS temp_read,
         sum(temp_blks_written)::bigint AS temp_written, left(min(coalesce(query, '')), {chars}) AS query
  FROM s WHERE queryid IS NOT NULL GROUP BY queryid
  UNION ALL
  SELECT NULL, ARRAY[rolname], sum(calls)::bigint, sum(total_ms)::float8, sum(rows)::bigint,
         sum(shared_blks_hit)::bigint, sum(shared_blks_read)::bigint, sum(temp_blks_read)::bigint,
         sum(temp_blks_written)::bigint, {hidden}
  FROM s WHERE queryid IS NULL GROUP BY rolname
), ranked AS (
  SELECT *, row_number() OVER (ORDER BY queryid IS NULL, total_ms DESC) AS by_total,
            row_number() OVER (ORDER BY queryid IS NULL, total_ms / nullif(calls, 0) DESC NULLS LAST) AS by_mean
  FROM grouped
)
SELECT queryid, users, calls, total_ms, rows, hit, read, temp_read, temp_written, query, current_database(),
       (SELECT oid FROM pg_database WHERE datname = current_database())::bigint
FROM ranked WHERE queryid IS NULL OR by_total <= %(by_total)s OR by_mean <= %(by_mean)s
ORDER BY total_ms DESC
"""


def _show_preload(conn: psycopg.Connection) -> str | None:
    """shared_preload_libraries, or None when this role may not read it (it needs superuser or
    pg_read_all_settings; pg_read_all_stats alone does not have it)."""
    try:
        with conn.transaction():  # a savepoint: the refusal must not end the transaction
            return conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return None


def _is_not_preloaded(exc: psycopg.Error) -> bool:
    return exc.sqlstate == "55000" and "shared_preload_libraries" in str(exc)


def read_statements(db: DatabaseConfig, *, top: int, statement_timeout: timedelta) -> StatementsReading:
    """The statements of `db`'s database the review needs: the top 5 x `top` by total time and the
    top `top` by mean, in a READ ONLY transaction. pg_stat_statements missing, not created here or
    not preloaded comes back as `unavailable`, never as an error."""
    with connect(db, statement_timeout=statement_timeout, lock_timeout=min(statement_timeout, timedelta(seconds=5))
                 ) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        preload = _show_preload(conn)
        found = conn.execute(_EXTENSION).fetchone()
        if found is None:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone()
            return StatementsReading([], unavailable="not-created" if available else "not-installed",
                                     preload=preload, server_version=version)
        schema = found[0]
        columns: dict[str, set[str]] = {}
        for relation, column in conn.execute(_COLUMNS, [schema]).fetchall():
            columns.setdefault(relation, set()).add(column)
        total = "total_exec_time" if "total_exec_time" in columns.get("pg_stat_statements", ()) else "total_time"
        query = sql.SQL(_STATEMENTS).format(total=sql.Identifier(total), schema=sql.Identifier(schema),
                                            chars=sql.Literal(TEXT_CHARS), hidden=sql.Literal(HIDDEN_TEXT))
        try:
            with conn.transaction():
                rows = conn.execute(query, {"by_total": SNAPSHOT_FACTOR * top, "by_mean": top}).fetchall()
        except psycopg.Error as exc:
            if not _is_not_preloaded(exc):
                raise
            return StatementsReading([], unavailable="not-preloaded", schema=schema, preload=preload,
                                     server_version=version)
        stats_reset = None
        if "pg_stat_statements_info" in columns:  # PostgreSQL 14+ (extension 1.9+)
            stats_reset = conn.execute(sql.SQL("SELECT stats_reset FROM {}.pg_stat_statements_info").format(
                sql.Identifier(schema))).fetchone()[0]
        conn.rollback()
    stats = [QueryStat(queryid=qid, database=dbname, users=tuple(users), calls=int(calls), total_exec_ms=float(ms),
                       rows=int(nrows), shared_blks_hit=int(hit), shared_blks_read=int(read),
                       temp_blks_read=int(temp_read), temp_blks_written=int(temp_written), query=text or "",
                       dbid=int(dbid))
             for qid, users, calls, ms, nrows, hit, read, temp_read, temp_written, text, dbname, dbid in rows]
    return StatementsReading(stats, stats_reset=stats_reset, schema=schema, preload=preload, server_version=version)
