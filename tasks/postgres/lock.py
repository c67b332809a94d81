"""A session-level advisory lock, held on a connection of its own for the whole duty.

The lock belongs to the session, so it goes when the session does: at once when the run's
process dies (its socket closes), within about two minutes when its machine or network does
(the server's TCP keepalives, set for this session, notice the silence). The connection's
application_name names the holder, so a refused run can say who holds the lock (pg_locks joined
with pg_stat_activity). Waiting is polling pg_try_advisory_lock: a waiter never queues on the
lock, so it never shows up as a blocked query in health-check.
"""

from __future__ import annotations

import time
from datetime import timedelta, timezone

import psycopg

from maint.config import DatabaseConfig
from maint.locks import LockHolder, advisory_lock_ids
from maint.tasks.postgres.connection import open_connection, translate_query_error

_FIRST_POLL_SECONDS, _MAX_POLL_SECONDS = 0.05, 1.0
# The server notices a vanished client after idle + interval * count seconds (2 minutes), not
# after the kernel's default of two hours; the session must never be ended for being idle.
_SESSION = {"tcp_keepalives_idle": 60, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 6}

_HOLDER = """
SELECT l.pid, a.application_name, host(a.client_addr), coalesce(a.state_change, a.backend_start)
  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = %s::oid AND l.objid = %s::oid
"""


class AdvisoryLock:
    """`acquire(wait)` then `release()`, in the database `db` names; `holder` names who refused us.
    Raises DatabaseError/DatabaseUnavailable naming the database when it cannot be asked."""

    def __init__(self, db: DatabaseConfig, key: int, label: str):
        self.db, self.key, self.label = db, key, label
        self.holder: LockHolder | None = None
        self.taken_over: LockHolder | None = None  # never: a dead run's advisory lock is already gone
        self._conn: psycopg.Connection | None = None

    def acquire(self, wait: timedelta) -> bool:
        self._close()
        deadline = time.monotonic() + wait.total_seconds()
        conn = self._conn = open_connection(self.db, autocommit=True, application_name=self.label,
                                            statement_timeout=timedelta(seconds=30), settings=_SESSION)
        try:
            if conn.info.server_version >= 140000:
                conn.execute("SET idle_session_timeout = 0")
            pause = _FIRST_POLL_SECONDS
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.holder = self._find_holder(conn)
                    self._close()
                    return False
                time.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_POLL_SECONDS)
        except psycopg.Error as exc:
            self._close()
            raise translate_query_error(self.db, exc) from exc
        return True

    def _find_holder(self, conn: psycopg.Connection) -> LockHolder | None:
        row = conn.execute(_HOLDER, advisory_lock_ids(self.key)).fetchone()
        if row is None:
            return None  # released since our last try
        pid, label, address, since = row
        return LockHolder(label or "", since.astimezone(timezone.utc) if since else None, address, pid)

    def release(self) -> bool:
        """Unlock and close; False if the lock had been lost (its session was ended meanwhile)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)).fetchone()[0])
        except psycopg.Error:
            return False
        finally:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
