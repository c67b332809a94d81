"""Backup stores: one abstract interface (`base.BackupStore`), a local/NFS directory and Google
Cloud Storage implementing it. `open_store` is the only place that looks at a store's kind.
`StoreLock` is a lock held as an object in any of them."""

from __future__ import annotations

from maint.config import BackupStoreConfig
from maint.tasks.storage.base import BackupStore, LockObject, ObjectWriter, StoredObject
from maint.tasks.storage.gcs import GcsStore
from maint.tasks.storage.local import LocalStore
from maint.tasks.storage.lock import StoreLock

__all__ = ["BackupStore", "LockObject", "ObjectWriter", "StoreLock", "StoredObject", "open_store"]


def open_store(config: BackupStoreConfig, *, chunk_size: int = 8 * 1024 * 1024) -> BackupStore:
    if config.url.startswith("gs://"):
        return GcsStore(config.url, chunk_size=chunk_size)
    return LocalStore(config.url)
