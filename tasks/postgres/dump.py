"""A consistent dump: pg_dump --snapshot on an exported snapshot, with the exact row counts of
what it dumps read in that same snapshot meanwhile."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Iterator

from maint.backups import TableCount
from maint.config import DatabaseConfig
from maint.tasks.postgres.connection import connect
from maint.tasks.postgres.programs import DumpProcess
from maint.tasks.postgres.snapshot import ExportedSnapshot, count_table_rows, export_snapshot


class ConsistentDump:
    """`with ConsistentDump(db, compress=6) as dump:` connects, opens a REPEATABLE READ
    transaction, exports its snapshot and starts pg_dump on it; the rows are counted in that
    transaction on a worker thread while the caller reads `dump.chunks()`. `dump.finish()` waits
    for pg_dump (DumpError in its own words if it failed) and returns the counts.

    Leaving the block by an exception, or without finish(), kills pg_dump and cancels the count
    rather than wait for it; leaving it after finish() ends the transaction, so the snapshot may
    go. psycopg errors leave as DatabaseError naming the database, as from connect()."""

    def __init__(self, db: DatabaseConfig, *, compress: int):
        self.db, self.compress = db, compress
        self._stack = ExitStack()
        self._finished = False

    def __enter__(self) -> "ConsistentDump":
        with ExitStack() as stack:
            self._conn = stack.enter_context(connect(self.db))
            self.snapshot: ExportedSnapshot = export_snapshot(self._conn)
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            self._process = DumpProcess(self.db, snapshot_id=self.snapshot.snapshot_id, compress=self.compress)
            stack.push(self._end)  # runs before the pool waits for the count
            # Same transaction, same snapshot as pg_dump: the counts are exactly what it dumps.
            self._counting = pool.submit(count_table_rows, self._conn)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)

    @property
    def pid(self) -> int:
        return self._process.pid

    def chunks(self) -> Iterator[bytes]:
        return self._process.chunks()

    def finish(self) -> list[TableCount]:
        self._process.finish()
        tables = self._counting.result()
        self._finished = True
        return tables

    def _end(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._finished:
            self._conn.rollback()  # the snapshot may go now: pg_dump is done with it
            return
        self._process.kill()
        self._conn.cancel_safe()  # stop a long count(*) rather than wait for it
