"""The PostgreSQL system: connections, the backup snapshot, the client programs (pg_dump,
pg_restore), health, vacuum and scratch databases for the restore test.

Every psycopg error is translated here into `maint.errors`, naming host:port/dbname and never the
password, which reaches libpq and pg_dump only through the environment (PGPASSWORD) or the
connect() keyword, never a command line or a log line.

  connection  connect, open_connection, libpq keywords and PG* variables, error translation
  snapshot    the exported snapshot and the exact row counts read in it
  programs    pg_dump and pg_restore on pipes, the tail of their stderr
  dump        ConsistentDump: pg_dump --snapshot with the row counts of the same snapshot
  health      server_health, run_sql_check
  vacuum      table_statistics, VacuumSession
  scratch     scratch databases: create, drop, restore into, count
  lock        AdvisoryLock: one run of a duty per database, held on a connection of its own
  server      ThrowawayPostgres, a cluster from the binaries on PATH (demo, tests, benchmarks);
              not re-exported here
"""

from maint.tasks.postgres.connection import (client_environment, connect, connection_kwargs, describe,
                                             open_connection, translate_connect_error, translate_query_error)
from maint.tasks.postgres.dump import ConsistentDump
from maint.tasks.postgres.health import run_sql_check, server_health
from maint.tasks.postgres.lock import AdvisoryLock
from maint.tasks.postgres.programs import ArchiveReader, DumpProcess, StderrTail, client_version
from maint.tasks.postgres.scratch import (archive_listing, count_rows, create_scratch_database,
                                          drop_scratch_database, list_databases, restore_archive)
from maint.tasks.postgres.snapshot import ExportedSnapshot, count_table_rows, export_snapshot
from maint.tasks.postgres.vacuum import VacuumSession, table_statistics

__all__ = [
    "AdvisoryLock", "ArchiveReader", "ConsistentDump", "DumpProcess", "ExportedSnapshot", "StderrTail", "VacuumSession",
    "archive_listing", "client_environment", "client_version", "connect", "connection_kwargs",
    "count_rows", "count_table_rows", "create_scratch_database", "describe", "drop_scratch_database",
    "export_snapshot", "list_databases", "open_connection", "restore_archive", "run_sql_check",
    "server_health", "table_statistics", "translate_connect_error", "translate_query_error",
]
