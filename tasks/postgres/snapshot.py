"""The backup snapshot: a REPEATABLE READ transaction exported for pg_dump --snapshot, and the
exact row counts of the tables pg_dump dumps, read in that same snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from maint.backups import TableCount


@dataclass(frozen=True)
class ExportedSnapshot:
    snapshot_id: str
    snapshot_time: datetime
    server_version: str


# Ordinary tables and partitions whose data pg_dump writes: not system schemas, not extension
# members (their data is only dumped on request), not temporary tables.
_DUMPED_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def export_snapshot(conn: psycopg.Connection) -> ExportedSnapshot:
    """Open a REPEATABLE READ transaction and export its snapshot for pg_dump --snapshot.

    The caller keeps the transaction open until pg_dump has finished: the exported snapshot
    lives only as long as the transaction that exported it."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    row = conn.execute(
        "SELECT pg_export_snapshot(), statement_timestamp(), current_setting('server_version')").fetchone()
    return ExportedSnapshot(snapshot_id=row[0], snapshot_time=row[1], server_version=row[2])


def count_table_rows(conn: psycopg.Connection) -> list[TableCount]:
    """Exact row counts, in whatever snapshot the connection's transaction holds."""
    tables = conn.execute(_DUMPED_TABLES).fetchall()
    counts = []
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts.append(TableCount(schema, table, conn.execute(query).fetchone()[0]))
    return counts
