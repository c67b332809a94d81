"""A lock held as an object in a backup store, for a duty that has no database to lock.

Taking it is creating the object where none exists (`BackupStore.create_lock`: one creator of
many wins); releasing it is deleting that very object. A run that dies cannot delete it, so the
object says when it expires (`store_lock_ttl` after it was taken), and a run that finds an
expired one takes it over, removing exactly the object it read.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from maint.locks import LockHolder, LockRecord
from maint.tasks.storage.base import BackupStore, LockObject

_FIRST_POLL_SECONDS, _MAX_POLL_SECONDS = 0.05, 1.0


class StoreLock:
    """`acquire(wait)` then `release()`; `holder` names who refused us, `taken_over` whose expired
    lock this run removed. Raises StorageError when the store itself refuses or fails."""

    def __init__(self, store: BackupStore, name: str, label: str, ttl: timedelta):
        self.store, self.name, self.label, self.ttl = store, name, label, ttl
        self.url = store.url + name
        self.holder: LockHolder | None = None
        self.taken_over: LockHolder | None = None
        self._mine: LockObject | None = None

    def acquire(self, wait: timedelta) -> bool:
        deadline = time.monotonic() + wait.total_seconds()
        pause = _FIRST_POLL_SECONDS
        while True:
            now = datetime.now(timezone.utc)
            record = LockRecord.new(self.label, now, self.ttl).to_json()
            self._mine = self.store.create_lock(self.name, record)
            if self._mine is not None:
                return True
            theirs = self.store.read_lock(self.name)
            if theirs is None:
                continue  # released in between: ask again at once
            if theirs.data == record:
                # Ours after all: a retried create whose first attempt had landed.
                self._mine = theirs
                return True
            found = LockRecord.from_object(theirs.data, theirs.created_at, self.ttl)
            if found.is_stale(now):
                if self.store.delete_lock(theirs):
                    self.taken_over = LockHolder.of_record(found, theirs.url)
                continue
            self.holder = LockHolder.of_record(found, theirs.url)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL_SECONDS)

    def release(self) -> bool:
        """Delete our lock object; False if it was no longer ours (removed, or taken over)."""
        mine, self._mine = self._mine, None
        return mine is not None and self.store.delete_lock(mine)
