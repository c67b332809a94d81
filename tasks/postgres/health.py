"""The server's health (connections, sessions, wraparound, largest tables) and the configured
read-only SQL checks."""

from __future__ import annotations

from datetime import timedelta

from maint.config import DatabaseConfig
from maint.health import ServerHealth, Session, SqlCheckResult
from maint.tasks.postgres.connection import connect

# Everything below works for a role with pg_monitor: pg_stat_activity shows every session's
# query to members of pg_read_all_stats, and the size and age functions need no ownership.

_SETTINGS = """
SELECT current_setting('server_version'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND application_name IS DISTINCT FROM %(own)s)::int
"""

# Client backends only: autovacuum workers, walsenders and other background processes are
# never "long queries", whatever they are doing.
_SESSIONS = """
SELECT pid, usename, application_name, state, now() - query_start, now() - state_change,
       left(query, 200), pg_blocking_pids(pid)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

_WRAPAROUND = """
SELECT (SELECT ARRAY[datname, age(datfrozenxid)::text] FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1),
       (SELECT ARRAY[datname, mxid_age(datminmxid)::text] FROM pg_database ORDER BY mxid_age(datminmxid) DESC LIMIT 1)
"""

# From pg_class statistics, not pg_total_relation_size(): that takes a lock on each table and
# would queue behind the very ACCESS EXCLUSIVE lock the health check is there to report.
_LARGEST_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname),
       (c.relpages::bigint
        + coalesce((SELECT t.relpages FROM pg_class t WHERE t.oid = c.reltoastrelid), 0)
        + coalesce((SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                    WHERE x.indrelid = c.oid), 0)) * current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY 2 DESC LIMIT 10
"""


def server_health(db: DatabaseConfig, *, long_query: timedelta, idle_in_transaction: timedelta,
                  blocked: timedelta, statement_timeout: timedelta, lock_timeout: timedelta,
                  application_name: str = "maint health-check") -> ServerHealth:
    """`application_name`: the one this run's connections carry (this one and its SQL checks'),
    never counted as clients: a check must not count itself, or a figure near the limit would
    depend on how many of its own connections happened to be open at that instant."""
    with connect(db, autocommit=True, statement_timeout=statement_timeout, lock_timeout=lock_timeout,
                 application_name=application_name) as conn:
        version, max_connections, reserved, clients = conn.execute(_SETTINGS, {"own": application_name}).fetchone()
        rows = conn.execute(_SESSIONS).fetchall()
        queries = {row[0]: row[6] or "" for row in rows}
        long_queries, idle, waiting = [], [], []
        for pid, user, app, state, running, in_state, query, blockers in rows:
            if blockers and running and running > blocked:
                waiting.append(Session(pid, user, app, running, query or "", tuple(blockers),
                                       tuple(queries.get(b, "(not visible)") for b in blockers)))
            elif state == "active" and running and running > long_query:
                long_queries.append(Session(pid, user, app, running, query or ""))
            if state in ("idle in transaction", "idle in transaction (aborted)") and in_state and in_state > idle_in_transaction:
                idle.append(Session(pid, user, app, in_state, query or ""))
        xid, mxid = conn.execute(_WRAPAROUND).fetchone()
        largest = [(name, size) for name, size in conn.execute(_LARGEST_TABLES).fetchall()]
    return ServerHealth(server_version=version, max_connections=max_connections, reserved_connections=reserved,
                        client_connections=clients, long_queries=long_queries, idle_in_transaction=idle,
                        blocked=waiting, xid_age=(xid[0], int(xid[1])), mxid_age=(mxid[0], int(mxid[1])),
                        largest_tables=largest)


def run_sql_check(db: DatabaseConfig, query: str, timeout: timedelta, first: int = 5,
                  application_name: str = "maint health-check") -> SqlCheckResult:
    """A data check in a READ ONLY transaction: it can look, never change."""
    with connect(db, statement_timeout=timeout, lock_timeout=min(timeout, timedelta(seconds=5)),
                 application_name=application_name) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        cursor = conn.execute(query)
        columns = [c.name for c in cursor.description or []]
        first_rows = [tuple(r) for r in cursor.fetchmany(first)] if cursor.description else []
        count = len(first_rows) + sum(1 for _ in cursor) if cursor.description else 0
        conn.rollback()
    return SqlCheckResult(row_count=count, columns=columns, first_rows=first_rows)
