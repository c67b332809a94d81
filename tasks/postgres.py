"""PostgreSQL: connections, snapshots, row counts and the client programs (pg_dump).

Every psycopg error is translated here into `maint.errors`, naming host:port/dbname and never the
password, which reaches libpq and pg_dump only through the environment (PGPASSWORD) or the
connect() keyword, never a command line or a log line.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

import psycopg
from psycopg import sql

from maint.config import DatabaseConfig
from maint.redaction import redact
from maint.tasks.environment import resolve_secret
from maint.errors import DatabaseError, DatabaseUnavailable, DumpError
from maint.health import ServerHealth, Session, SqlCheckResult
from maint.restore import check_scratch_name
from maint.vacuum import TableStats, VacuumAction, VacuumOutcome

# SQLSTATEs and libpq messages that mean "try again in a moment", not "you are wrong".
_UNAVAILABLE_SQLSTATES = {"57P03", "57P01", "57P02", "08006", "08001", "53300"}
_UNAVAILABLE_TEXT = ("connection refused", "starting up", "shutting down", "timeout expired",
                     "could not connect", "no route to host", "server closed the connection",
                     "connection reset", "too many clients", "in recovery mode")


def _password(db: DatabaseConfig) -> str | None:
    return resolve_secret(db.password_env, field=f"databases.{db.name}.password_env")


def connection_kwargs(db: DatabaseConfig, dbname: str | None = None) -> dict:
    """Keyword arguments for psycopg.connect; the password is the only secret among them."""
    kwargs = {"host": db.host, "port": db.port, "dbname": dbname or db.dbname, "user": db.user,
              "sslmode": db.sslmode, "connect_timeout": max(1, int(db.connect_timeout.total_seconds())),
              "application_name": "maint"}
    if db.sslrootcert:
        kwargs["sslrootcert"] = db.sslrootcert
    password = _password(db)
    if password is not None:
        kwargs["password"] = password
    return kwargs


def client_environment(db: DatabaseConfig, dbname: str | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore/psql: connection by PG* variables, no command-line secret."""
    env = dict(os.environ)
    env.update({"PGHOST": db.host, "PGPORT": str(db.port), "PGDATABASE": dbname or db.dbname,
                "PGUSER": db.user, "PGSSLMODE": db.sslmode, "PGAPPNAME": "maint",
                "PGCONNECT_TIMEOUT": str(max(1, int(db.connect_timeout.total_seconds())))})
    if db.sslrootcert:
        env["PGSSLROOTCERT"] = db.sslrootcert
    password = _password(db)
    if password is not None:
        env["PGPASSWORD"] = password
    else:
        env.pop("PGPASSWORD", None)
    return env


def describe(db: DatabaseConfig, dbname: str | None = None) -> str:
    """How a database is named in messages: config name, host:port/dbname, user. No password."""
    return f"database '{db.name}' ({db.host}:{db.port}/{dbname or db.dbname} as {db.user})"


def _libpq_reason(exc: Exception) -> str:
    """The useful line of a libpq error, e.g. 'password authentication failed for user "maint"'."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "failed: " in first:
        first = first.rsplit("failed: ", 1)[1]
    return first.replace("FATAL:  ", "").strip()


def translate_connect_error(db: DatabaseConfig, exc: psycopg.Error, dbname: str | None = None) -> Exception:
    reason = redact(_libpq_reason(exc))
    sqlstate = getattr(exc, "sqlstate", None)
    lowered = str(exc).lower()
    if sqlstate in _UNAVAILABLE_SQLSTATES or any(t in lowered for t in _UNAVAILABLE_TEXT):
        return DatabaseUnavailable(f"cannot connect to {describe(db, dbname)}: {reason}")
    return DatabaseError(f"cannot connect to {describe(db, dbname)}: {reason}")


def _is_connection_loss(exc: psycopg.Error) -> bool:
    """Connection class (08), admin shutdown (57P0x), or no SQLSTATE at all (the socket went away);
    a lock or statement timeout is the query's failure, not the connection's."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None and isinstance(exc, psycopg.OperationalError) or (
        sqlstate is not None and (sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")))


def _milliseconds(delta: timedelta) -> int:
    """0 stays 0 (no limit); anything else at least 1 ms."""
    return 0 if delta <= timedelta(0) else max(1, int(delta.total_seconds() * 1000))


def open_connection(db: DatabaseConfig, *, dbname: str | None = None, autocommit: bool = False,
                    statement_timeout: timedelta | None = None,
                    lock_timeout: timedelta | None = None) -> psycopg.Connection:
    """A connection the caller closes; the timeouts are set at startup, so they bind every
    statement including the first."""
    kwargs = connection_kwargs(db, dbname)
    settings = []
    if statement_timeout is not None:
        settings.append(f"-c statement_timeout={_milliseconds(statement_timeout)}")
    if lock_timeout is not None:
        settings.append(f"-c lock_timeout={_milliseconds(lock_timeout)}")
    if settings:
        kwargs["options"] = " ".join(settings)
    try:
        return psycopg.connect(**kwargs, autocommit=autocommit)
    except psycopg.Error as exc:
        raise translate_connect_error(db, exc, dbname) from None  # libpq text can echo conninfo


def translate_query_error(db: DatabaseConfig, exc: psycopg.Error, dbname: str | None = None) -> DatabaseError:
    if _is_connection_loss(exc):
        return DatabaseUnavailable(f"lost connection to {describe(db, dbname)}: {redact(_libpq_reason(exc))}")
    return DatabaseError(f"query failed on {describe(db, dbname)}: {redact(_libpq_reason(exc))}")


@contextmanager
def connect(db: DatabaseConfig, *, dbname: str | None = None, autocommit: bool = False,
            statement_timeout: timedelta | None = None,
            lock_timeout: timedelta | None = None) -> Iterator[psycopg.Connection]:
    """open_connection, closed on exit; psycopg errors become DatabaseError naming the database."""
    conn = open_connection(db, dbname=dbname, autocommit=autocommit, statement_timeout=statement_timeout,
                           lock_timeout=lock_timeout)
    try:
        yield conn
    except psycopg.Error as exc:
        raise translate_query_error(db, exc, dbname) from exc
    finally:
        conn.close()


# --- the backup snapshot -------------------------------------------------------------------------

@dataclass(frozen=True)
class TableRows:
    schema: str
    table: str
    rows: int

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ExportedSnapshot:
    snapshot_id: str
    snapshot_time: datetime
    server_version: str
    server_version_num: int


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
        "SELECT pg_export_snapshot(), statement_timestamp(), current_setting('server_version'),"
        " current_setting('server_version_num')::int").fetchone()
    return ExportedSnapshot(snapshot_id=row[0], snapshot_time=row[1], server_version=row[2],
                            server_version_num=row[3])


def count_table_rows(conn: psycopg.Connection) -> list[TableRows]:
    """Exact row counts, in whatever snapshot the connection's transaction holds."""
    tables = conn.execute(_DUMPED_TABLES).fetchall()
    counts = []
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts.append(TableRows(schema, table, conn.execute(query).fetchone()[0]))
    return counts


# --- client programs -----------------------------------------------------------------------------

def client_version(program: str) -> str:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
    return out.stdout.strip()


class StderrTail:
    """Drains a child's stderr in a thread (a chatty child never blocks on a full pipe) and keeps
    only its last lines, so memory stays flat however long the child runs."""

    def __init__(self, stream, lines: int):
        self._lines: deque[str] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self._lines.append(line.decode(errors="replace").rstrip())

    def text(self) -> str:
        """The kept lines, once the child has exited."""
        self._thread.join(timeout=5)
        return "; ".join(line for line in self._lines if line)


class DumpProcess:
    """pg_dump writing a custom-format archive to a pipe that the caller reads in chunks."""

    def __init__(self, db: DatabaseConfig, *, snapshot_id: str | None, compress: int, program: str = "pg_dump"):
        self.db = db
        args = [program, "--format=custom", f"--compress={compress}", "--no-password"]
        if snapshot_id:
            args.append(f"--snapshot={snapshot_id}")
        try:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=client_environment(db), bufsize=0)
        except FileNotFoundError:
            raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
        self._stderr = StderrTail(self.process.stderr, lines=20)

    @property
    def pid(self) -> int:
        return self.process.pid

    def chunks(self, size: int = 1024 * 1024) -> Iterator[bytes]:
        while chunk := self.process.stdout.read(size):
            yield chunk

    def finish(self) -> None:
        """Wait for pg_dump; raise DumpError with its own words if it failed or was killed."""
        returncode = self.process.wait()
        if returncode != 0:
            how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
            detail = self._stderr.text() or "no message"
            raise DumpError(f"pg_dump of {describe(self.db)} {how}: {redact(detail)}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ArchiveReader:
    """`pg_restore --file=/dev/null` fed on stdin: it parses the table of contents and
    decompresses every data block, which `pg_restore --list` never touches. The caller feeds
    chunks as it reads them, so the archive is checked in the same pass as its checksum.

    pg_restore reads its input a few kilobytes at a time. A plain blocking write of a large chunk
    into the pipe would wake it and us on every few kilobytes it takes (about 200,000 context
    switches per GiB, about 15% of the wall time on two cores). Instead a piece is written only once
    the pipe has room for all of it, so each write completes at once and pg_restore drains a full
    pipe undisturbed while we read and hash the next chunk."""

    checker = "pg_restore"
    _POLL_SECONDS = 0.0005  # pg_restore drains ~100 KiB in that time: the pipe never runs dry

    def __init__(self, program: str = "pg_restore"):
        try:
            self.process = subprocess.Popen([program, "--file=/dev/null"], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
        except FileNotFoundError:
            raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
        self._fd = self.process.stdin.fileno()
        self._pipe_bytes = _widen_pipe(self._fd)
        self._piece = max(4096, self._pipe_bytes // 4)
        self._stderr = StderrTail(self.process.stderr, lines=10)
        self._closed_early = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), self._piece):
            if self._closed_early:
                return  # pg_restore already gave up; the caller still reads on for its checksum
            piece = view[start:start + self._piece]
            self._wait_for_room(len(piece))
            try:
                self.process.stdin.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                self._closed_early = True

    def _wait_for_room(self, size: int) -> None:
        while True:
            unread = _unread_bytes(self._fd)
            if unread is None or unread + size <= self._pipe_bytes:
                return  # room (or no way to tell: then the write simply blocks)
            if self.process.poll() is not None:
                return  # it exited with input unread: the write fails and says so
            time.sleep(self._POLL_SECONDS)

    def finish(self) -> tuple[bool, str]:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        returncode = self.process.wait()
        detail = self._stderr.text().replace("pg_restore: ", "")
        if returncode != 0:
            return False, f"pg_restore failed: {detail or f'exit status {returncode}'}"
        if self._closed_early:
            return False, "pg_restore stopped reading before the end of the archive"
        return True, ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux fcntl commands


def _widen_pipe(fd: int, size: int = 1024 * 1024) -> int:
    """Fewer, larger pipe writes: the reader and pg_restore overlap instead of taking turns.
    Returns the pipe's capacity in bytes."""
    import fcntl

    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size, or not Linux
    try:
        return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        return 64 * 1024  # the Linux default; elsewhere only a hint


def _unread_bytes(fd: int) -> int | None:
    """Bytes written to a pipe and not yet read (FIONREAD); None where the platform cannot say."""
    import fcntl
    import struct
    import termios

    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return None


# --- health ---------------------------------------------------------------------------------------
# Everything below works for a role with pg_monitor: pg_stat_activity shows every session's
# query to members of pg_read_all_stats, and the size and age functions need no ownership.

_SETTINGS = """
SELECT current_setting('server_version'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
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
                  blocked: timedelta, statement_timeout: timedelta, lock_timeout: timedelta) -> ServerHealth:
    with connect(db, autocommit=True, statement_timeout=statement_timeout, lock_timeout=lock_timeout) as conn:
        version, max_connections, reserved, clients = conn.execute(_SETTINGS).fetchone()
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


def run_sql_check(db: DatabaseConfig, query: str, timeout: timedelta, first: int = 5) -> SqlCheckResult:
    """A data check in a READ ONLY transaction: it can look, never change."""
    with connect(db, statement_timeout=timeout, lock_timeout=min(timeout, timedelta(seconds=5))) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        cursor = conn.execute(query)
        columns = [c.name for c in cursor.description or []]
        first_rows = [tuple(r) for r in cursor.fetchmany(first)] if cursor.description else []
        count = len(first_rows) + sum(1 for _ in cursor) if cursor.description else 0
        conn.rollback()
    return SqlCheckResult(row_count=count, columns=columns, first_rows=first_rows)


# --- vacuum --------------------------------------------------------------------------------------

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
       coalesce(w.has_nulls, false)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
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
                       columns=r[14], has_nulls=r[15]) for r in rows]


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


# --- restore into scratch databases --------------------------------------------------------------

def list_databases(server: DatabaseConfig) -> list[str]:
    with connect(server, autocommit=True, statement_timeout=timedelta(seconds=30)) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def create_scratch_database(server: DatabaseConfig, name: str, *, prefix: str, protected: set[str]) -> None:
    check_scratch_name(name, prefix, protected)  # before any connection
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_scratch_database(server: DatabaseConfig, name: str, *, prefix: str, protected: set[str]) -> None:
    check_scratch_name(name, prefix, protected)  # before any connection
    with connect(server, autocommit=True) as conn:
        # FORCE: a pg_restore killed mid-way may leave sessions behind.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def archive_listing(path: str) -> str:
    result = subprocess.run(["pg_restore", "--list", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise DumpError(f"pg_restore --list {path} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def restore_archive(server: DatabaseConfig, dbname: str, path: str, *, jobs: int) -> None:
    """pg_restore into `dbname` with `jobs` workers (the file is seekable); objects are owned by
    the restoring role, since the scratch server need not have the production roles."""
    args = ["pg_restore", "--no-owner", "--no-privileges", "--no-password", f"--jobs={jobs}",
            f"--dbname={dbname}", path]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=client_environment(server, dbname))
    stderr = StderrTail(process.stderr, lines=20)
    try:
        returncode = process.wait()
    except BaseException:
        process.kill()
        raise
    errors = stderr.text()
    if returncode != 0 or "error:" in errors:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        raise DumpError(f"pg_restore into {describe(server, dbname)} {how}: {redact(errors) or 'no message'}")


def count_rows(server: DatabaseConfig, dbname: str) -> dict[str, int]:
    with connect(server, dbname=dbname, autocommit=False) as conn:
        return {t.qualified_name: t.rows for t in count_table_rows(conn)}
