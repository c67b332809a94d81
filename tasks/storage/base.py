"""The interface every backup store implements: the whole lifecycle the duties use.

Every method is abstract, so a new store (S3 next) cannot quietly leave one out, and no duty
needs to ask which store it holds. Completeness is each store's promise: an object appears
under its final name only once it is whole, and nothing is ever overwritten.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class StoredObject:
    """An object in a store, as the store describes it (never an SDK object)."""

    name: str  # relative to the store's prefix
    url: str
    size_bytes: int
    created_at: datetime | None  # None: the store reported no creation time (never judged fresh)
    # The version a read or delete is pinned to, where the store has them: GCS generation, S3 VersionId.
    generation: int | str | None = None
    crc32c: str | None = None  # base64 of the big-endian CRC32C, as GCS reports it
    md5: str | None = None  # base64, as GCS reports it


@dataclass(frozen=True)
class LockObject:
    """A lock object as the store holds it: its content, and what pins a delete to this very one."""

    name: str
    url: str
    data: bytes
    created_at: datetime
    generation: int | str | None = None  # GCS; a local lock object is told apart by its content


class ObjectWriter(abc.ABC):
    """A streamed write: nothing is visible under the final name until `commit`."""

    url: str

    @abc.abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> StoredObject:
        """Make the object visible under its final name; fail if that name is taken."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Leave nothing under the final name. Safe to call after a failed write or commit."""


class BackupStore(abc.ABC):
    url: str  # how findings name the store: its configured URL, ending in "/"

    @abc.abstractmethod
    def check_writable(self) -> None:
        """Raise StorageError naming the store if a backup could not be written now."""

    @abc.abstractmethod
    def list_objects(self) -> list[StoredObject]:
        """The objects directly under the store's prefix, oldest first."""

    @abc.abstractmethod
    def open_reader(self, name: str, generation: int | str | None = None) -> Iterator[bytes]:
        """Stream an object in chunks, pinned to `generation` where the store has them."""

    @abc.abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """A small object (a manifest) in one piece."""

    @abc.abstractmethod
    def open_writer(self, name: str) -> ObjectWriter:
        """A streamed write of a new object; refuses a name that exists."""

    @abc.abstractmethod
    def put_bytes(self, name: str, data: bytes) -> StoredObject:
        """A small new object (a manifest) in one piece; refuses a name that exists."""

    @abc.abstractmethod
    def delete(self, name: str, generation: int | str | None = None) -> None:
        """Delete one object, only if it is still `generation` where the store has them.
        Raises DeleteRefused when the store will not (a hold, a lock, changed, already gone)."""

    @abc.abstractmethod
    def create_lock(self, name: str, data: bytes) -> LockObject | None:
        """Create a small hidden object only where none has that name, whole or not at all: of any
        number of runs creating it at once exactly one gets it; None for the others."""

    @abc.abstractmethod
    def read_lock(self, name: str) -> LockObject | None:
        """The lock object, or None when there is none."""

    @abc.abstractmethod
    def delete_lock(self, lock: LockObject) -> bool:
        """Delete the lock object only if it is still `lock` (not one another run made since);
        False when it was gone or had been replaced, which then stays."""

    @abc.abstractmethod
    def stored_crc32c(self, name: str, generation: int | str | None = None) -> str | None:
        """The CRC32C the store itself keeps for this version of the object (base64, as GCS and
        S3 report it), for a verification to compare with the bytes it reads; None where the
        store keeps none (a directory) or the object was written without one."""

    @abc.abstractmethod
    def local_path(self, name: str) -> Path | None:
        """The object as a seekable file on this machine, when the store is a directory; None
        when it must be downloaded to be read at random."""
