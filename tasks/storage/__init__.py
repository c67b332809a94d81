"""Backup stores: one abstract interface (`base.BackupStore`), a local/NFS directory, Google
Cloud Storage and S3 implementing it. `open_store` is the only place that looks at a store's kind.
`StoreLock` is a lock held as an object in any of them."""

from __future__ import annotations

from maint.config import BackupStoreConfig
from maint.tasks.storage.base import BackupStore, LockObject, ObjectWriter, StoredObject
from maint.tasks.storage.gcs import GcsStore
from maint.tasks.storage.local import LocalStore
from maint.tasks.storage.lock import StoreLock
from maint.tasks.storage.s3 import S3Store

__all__ = ["BackupStore", "LockObject", "ObjectWriter", "S3Store", "StoreLock", "StoredObject", "open_store"]


def open_store(config: BackupStoreConfig, *, chunk_size: int = 8 * 1024 * 1024) -> BackupStore:
    if config.url.startswith("gs://"):
        return GcsStore(config.url, chunk_size=chunk_size)
    if config.url.startswith("s3://"):
        return S3Store(config.url, endpoint_url=config.endpoint_url, region=config.region,
                       part_size=config.part_size, access_key_id_env=config.access_key_id_env,
                       secret_access_key_env=config.secret_access_key_env,
                       session_token_env=config.session_token_env, chunk_size=chunk_size)
    return LocalStore(config.url)
