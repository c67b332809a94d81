"""Vacuum: table statistics from the catalogs, and VACUUM/ANALYZE table after table on one
connection."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
from psycopg import sql

from maint.config import DatabaseConfig
from maint.errors import DatabaseError
from maint.tasks.postgres.connection import _is_connection_loss, connect, open_connection, translate_query_error
from maint.vacuum import TableStats, VacuumAction, VacuumOutcome

# Everything from the catalogs and the statistics views: learning about a table takes no lock on it.
_TABLE_STATISTICS = """
SELECT n.nspname, c.relname, c.relkind,
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
       CASE WHEN c.relkind = 'p' THEN 0
            ELSE greatest(age(c.relfrozenxid), coalesce(age(t.relfrozenxid), 0)) END,
       (c.relpages + coalesce(t.relpages, 0))::bigint * current_setting('block_size')::bigint,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END, c.relpages,
       current_setting('block_size')::int,
       coalesce((SELECT option_value::int FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'fillfactor'), 100),
       w.width,
       (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       coalesce(w.has_nulls, false),
       pg_get_userbyid(c.relowner),
       -- Who may VACUUM it (VACUUM's own rule, so a table it would skip with a warning is never
       -- tried): up to 16 the table's or the database's owner (shared catalogs excepted), with a
       -- role's members and superusers; from 17 whoever holds MAINTAIN, which includes those.
       CASE WHEN current_setting('server_version_num')::int >= 170000 THEN has_table_privilege(c.oid, 'MAINTAIN')
            ELSE pg_has_role(c.relowner, 'USAGE') OR (NOT c.relisshared AND pg_has_role(d.datdba, 'USAGE')) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN (SELECT datdba FROM pg_database WHERE datname = current_database()) d
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
LEFT JOIN LATERAL (
    SELECT sum((1 - st.null_frac) * st.avg_width) AS width, bool_or(st.null_frac > 0) AS has_nulls
    FROM pg_stats st WHERE st.schemaname = n.nspname AND st.tablename = c.relname AND NOT st.inherited
) w ON true
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""


def table_statistics(db: DatabaseConfig, *, statement_timeout: timedelta, lock_timeout: timedelta) -> list[TableStats]:
    with connect(db, autocommit=True, statement_timeout=statement_timeout, lock_timeout=lock_timeout) as conn:
        rows = conn.execute(_TABLE_STATISTICS).fetchall()
    return [TableStats(schema=r[0], name=r[1], kind=r[2], live_tuples=r[3], dead_tuples=r[4], last_vacuum=r[5],
                       last_analyze=r[6], xid_age=r[7], size_bytes=r[8], reltuples=r[9], relpages=r[10],
                       block_size=r[11], fillfactor=r[12], data_width=float(r[13]) if r[13] is not None else None,
                       columns=r[14], has_nulls=r[15], owner=r[16], may_vacuum=r[17]) for r in rows]


def _dead_tuples(conn: psycopg.Connection, schema: str, table: str) -> int | None:
    row = conn.execute("SELECT n_dead_tup FROM pg_stat_all_tables WHERE schemaname = %s AND relname = %s",
                       (schema, table)).fetchone()
    return row[0] if row else None


class VacuumSession:
    """VACUUM (ANALYZE, SKIP_LOCKED) or ANALYZE (SKIP_LOCKED) table after table on one connection,
    as each of vacuumdb's jobs keeps one: a connection per table costs a backend start each time.
    Never waits on a lock: SKIP_LOCKED for the table's own lock, lock_timeout for any other.
    Problems are outcomes, never exceptions, so one bad table never stops the run; a connection
    that broke is replaced for the next table. One session per worker thread."""

    def __init__(self, db: DatabaseConfig, *, lock_timeout: timedelta):
        self.db, self.lock_timeout = db, lock_timeout
        self._conn: psycopg.Connection | None = None
        self._notices: list[str] = []

    def __enter__(self) -> "VacuumSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # statement_timeout 0: a vacuum may rightly take long; lock waits are what must be short.
            self._conn = open_connection(self.db, autocommit=True, statement_timeout=timedelta(0),
                                         lock_timeout=self.lock_timeout)
            self._conn.add_notice_handler(lambda notice: self._notices.append(notice.message_primary or ""))
        return self._conn

    def run(self, action: VacuumAction) -> VacuumOutcome:
        table = action.table
        name = table.qualified_name
        target = sql.Identifier(table.schema, table.name)
        if action.action == "vacuum":
            statement = sql.SQL("VACUUM (ANALYZE, SKIP_LOCKED) {}").format(target)
        else:
            statement = sql.SQL("ANALYZE (SKIP_LOCKED) {}").format(target)
        started = time.monotonic()
        try:
            conn = self._connection()
            self._notices.clear()
            try:
                before = _dead_tuples(conn, table.schema, table.name)
            except psycopg.OperationalError as exc:
                if not _is_connection_loss(exc):
                    raise
                # The server dropped the idle connection since the last table (a restart, an idle
                # session timeout); nothing of this table's work was sent, so a new one is safe.
                self.close()
                conn = self._connection()
                before = _dead_tuples(conn, table.schema, table.name)
            conn.execute(statement)
            seconds = time.monotonic() - started
            after = _dead_tuples(conn, table.schema, table.name)
        except DatabaseError as exc:
            return VacuumOutcome(name, action.action, "error", str(exc), time.monotonic() - started)
        except psycopg.Error as exc:
            if _is_connection_loss(exc):
                self.close()
            return VacuumOutcome(name, action.action, "error", str(translate_query_error(self.db, exc)),
                                 time.monotonic() - started)
        skipped = [w for w in self._notices if w.startswith("skipping")]
        if any("lock not available" in w for w in skipped):
            return VacuumOutcome(name, action.action, "skipped-locked", skipped[0], seconds, before, after)
        if skipped:
            return VacuumOutcome(name, action.action, "not-permitted", skipped[0], seconds, before, after)
        return VacuumOutcome(name, action.action, "done", "", seconds, before, after)
