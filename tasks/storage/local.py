"""A local or NFS-mounted directory as a backup store.

A backup is written as a hidden `.NAME.partial-PID` file, fsynced, and hard-linked into place: a
link, unlike a rename, refuses to replace an existing file, so an earlier backup is never
overwritten, and a failed write leaves nothing under the final name. Generations do not exist
here: pinned reads and deletes simply read and delete the file.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from maint.errors import DeleteRefused, StorageError
from maint.tasks.storage.base import BackupStore, LockObject, ObjectWriter, StoredObject


class LocalStore(BackupStore):
    def __init__(self, url: str):
        self.url = url if url.endswith("/") else url + "/"
        self.root = Path(urlparse(self.url).path)

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise StorageError(f"refusing object name {name!r} in {self.url}: not a plain file name")
        return self.root / name

    def _lock_path(self, name: str) -> Path:
        if "/" in name or not name.startswith("."):
            raise StorageError(f"refusing lock name {name!r} in {self.url}: not a hidden plain file name")
        return self.root / name

    def check_writable(self) -> None:
        # A missing directory is usually an NFS mount that is not there: never create it, or the
        # backup would silently land on the local disk.
        if not self.root.is_dir():
            raise StorageError(f"backup directory {self.root} does not exist (is the volume mounted?)")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"backup directory {self.root} is not writable by uid {os.getuid()}")

    def list_objects(self) -> list[StoredObject]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            raise StorageError(f"backup directory {self.root} does not exist (is the volume mounted?)") from None
        objects = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            st = entry.stat()
            objects.append(StoredObject(name=entry.name, url=self.url + entry.name, size_bytes=st.st_size,
                                        created_at=datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return sorted(objects, key=lambda o: o.created_at)

    def open_writer(self, name: str) -> "LocalWriter":
        return LocalWriter(self, self._path(name))

    def put_bytes(self, name: str, data: bytes) -> StoredObject:
        writer = self.open_writer(name)
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def delete(self, name: str, generation: int | str | None = None) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            raise DeleteRefused(f"{self.url}{name} is already gone") from None
        except PermissionError as exc:
            raise DeleteRefused(f"{self.url}{name}: deletion refused ({exc.strerror})") from exc

    def create_lock(self, name: str, data: bytes) -> LockObject | None:
        """Written whole beside the name, then linked into place: link(2) refuses an existing name,
        atomically, on NFS too (open's O_EXCL is not safe there), and the object is never seen
        half written."""
        path = self._lock_path(name)
        self.check_writable()
        partial = path.with_name(f"{name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(partial, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(partial, path)
        except FileExistsError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot create the lock {self.url}{name}: {exc.strerror}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return LockObject(name, self.url + name, data, datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))

    def read_lock(self, name: str) -> LockObject | None:
        path = self._lock_path(name)
        try:
            with open(path, "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the lock {self.url}{name}: {exc.strerror}") from exc
        return LockObject(name, self.url + name, data, datetime.fromtimestamp(mtime, timezone.utc))

    def delete_lock(self, lock: LockObject) -> bool:
        """Moved aside first (a rename is atomic: no other run can remove or replace what was
        moved), then compared: a lock that another run made meanwhile is put back."""
        path = self._lock_path(lock.name)
        aside = path.with_name(f"{lock.name}.released-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete the lock {lock.url}: {exc.strerror}") from exc
        try:
            if aside.read_bytes() == lock.data:
                return True
            try:
                os.link(aside, path)
            except FileExistsError:  # a third run has made one since: that one stands
                pass
            return False
        finally:
            aside.unlink(missing_ok=True)

    def stored_crc32c(self, name: str, generation: int | str | None = None) -> None:
        return None  # a file system keeps no checksum of its own: the manifest's is compared

    def local_path(self, name: str) -> Path:
        """The file itself: already on disk and seekable, so a restore needs no copy."""
        path = self._path(name)
        if not path.is_file():
            raise StorageError(f"{self.url}{name} does not exist")
        return path

    def read_bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.url}{name} does not exist") from None

    def open_reader(self, name: str, generation: int | str | None = None,
                    chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            with open(self._path(name), "rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk
        except FileNotFoundError:
            raise StorageError(f"{self.url}{name} does not exist") from None


class LocalWriter(ObjectWriter):
    def __init__(self, store: LocalStore, final: Path):
        self.store, self.final = store, final
        self.url = store.url + final.name
        self.partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
        try:
            self._file = open(self.partial, "xb")
        except OSError as exc:
            raise StorageError(f"cannot write {self.partial}: {exc.strerror}") from exc

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot write {self.url}: {exc.strerror}") from exc

    def commit(self) -> StoredObject:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.link(self.partial, self.final)  # refuses to replace an existing backup
        except FileExistsError:
            self.abort()
            raise StorageError(f"{self.url} already exists: refusing to overwrite an earlier backup") from None
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot complete {self.url}: {exc.strerror}") from exc
        self.partial.unlink()
        dir_fd = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a crash
        finally:
            os.close(dir_fd)
        st = self.final.stat()
        return StoredObject(self.final.name, self.url, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.partial.unlink(missing_ok=True)
