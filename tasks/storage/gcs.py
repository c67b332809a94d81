"""Google Cloud Storage as a backup store, through the google-cloud-storage client.

A backup is written through a resumable upload, which creates the object only when its last
chunk is committed (on failure the session is cancelled, never closed), with
`if_generation_match=0` so nothing is ever overwritten. Reads and deletes are pinned to the
generation that was listed. Every google.api_core/requests exception becomes a StorageError
naming the bucket or object.
"""

from __future__ import annotations

import os
from typing import Iterator
from urllib.parse import urlparse

from maint.errors import DeleteRefused, StorageError, TransientStorageError
from maint.tasks.storage.base import BackupStore, LockObject, ObjectWriter, StoredObject


def _gcs_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "maint-emulator"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def translate_gcs_error(exc: Exception, what: str) -> StorageError:
    """google.api_core/requests exceptions -> StorageError naming the bucket or object."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    code = getattr(exc, "code", None)
    if isinstance(exc, gexc.NotFound) or code == 404:
        return StorageError(f"{what}: not found (does the bucket exist?)")
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)) or code in (401, 403):
        return StorageError(f"{what}: permission denied ({exc.__class__.__name__}); check the service account's roles")
    if isinstance(exc, gexc.PreconditionFailed) or code == 412:
        return StorageError(f"{what}: already exists or changed meanwhile (precondition failed)")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return StorageError(f"{what}: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS or use workload identity)")
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError, gexc.RetryError, ConnectionError,
                        TimeoutError)) or (
            isinstance(code, int) and (code == 429 or code >= 500)):
        return TransientStorageError(f"{what}: transient error ({exc.__class__.__name__}: {str(exc)[:200]})")
    import requests

    if isinstance(exc, requests.exceptions.RequestException):
        return TransientStorageError(f"{what}: transient error ({exc.__class__.__name__})")
    return StorageError(f"{what}: {exc.__class__.__name__}: {str(exc)[:300]}")


_GCS_ERRORS: tuple[type[BaseException], ...] | None = None


def _gcs_errors() -> tuple[type[BaseException], ...]:
    global _GCS_ERRORS
    if _GCS_ERRORS is None:
        import requests
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc
        from google.resumable_media import common as rm_common

        _GCS_ERRORS = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, rm_common.InvalidResponse,
                       requests.exceptions.RequestException, ConnectionError)
    return _GCS_ERRORS


class GcsStore(BackupStore):
    def __init__(self, url: str, *, chunk_size: int = 8 * 1024 * 1024):
        parsed = urlparse(url)
        self.bucket_name = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.url = f"gs://{self.bucket_name}/{self.prefix}"
        # Resumable uploads need a multiple of 256 KiB; memory per upload is about one chunk.
        self.chunk_size = max(256 * 1024, chunk_size // (256 * 1024) * (256 * 1024))
        self._client = None

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = _gcs_client()
            except _gcs_errors() as exc:
                raise translate_gcs_error(exc, f"gs://{self.bucket_name}") from exc
        return self._client

    def _blob(self, name: str):
        if "/" in name:
            raise StorageError(f"refusing object name {name!r} in {self.url}: not a plain name")
        return self.client.bucket(self.bucket_name).blob(self.prefix + name)

    def check_writable(self) -> None:
        # Listing needs only object permissions, which a backup service account has; getting the
        # bucket's metadata would need more.
        try:
            list(self.client.list_blobs(self.bucket_name, prefix=self.prefix, max_results=1))
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, f"bucket gs://{self.bucket_name}") from exc

    def list_objects(self) -> list[StoredObject]:
        try:
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=self.prefix))
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, f"bucket gs://{self.bucket_name}") from exc
        objects = [self._describe(b) for b in blobs if "/" not in b.name[len(self.prefix):]]
        return sorted(objects, key=lambda o: o.created_at)

    def _describe(self, blob) -> StoredObject:
        return StoredObject(name=blob.name[len(self.prefix):], url=f"gs://{self.bucket_name}/{blob.name}",
                            size_bytes=int(blob.size or 0), created_at=blob.time_created, generation=blob.generation,
                            crc32c=blob.crc32c, md5=blob.md5_hash)

    def open_writer(self, name: str) -> "GcsWriter":
        blob = self._blob(name)
        try:
            if blob.exists():
                raise StorageError(f"{self.url}{name} already exists: refusing to overwrite an earlier backup")
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, f"{self.url}{name}") from exc
        return GcsWriter(self, blob, f"{self.url}{name}")

    def put_bytes(self, name: str, data: bytes) -> StoredObject:
        blob = self._blob(name)
        url = f"{self.url}{name}"
        try:
            # if_generation_match=0: create only, never replace; that makes the call safe to retry.
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0,
                                    checksum="crc32c")
            blob.reload()
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc
        return self._describe(blob)

    def delete(self, name: str, generation: int | str | None = None) -> None:
        from google.api_core import exceptions as gexc

        url = f"{self.url}{name}"
        try:
            # The generation pin: an object replaced since it was listed is not the one planned.
            self._blob(name).delete(if_generation_match=generation)
        except (gexc.Forbidden, gexc.PreconditionFailed, gexc.NotFound) as exc:
            why = {gexc.Forbidden: "refused (an object hold or a retention policy?)",
                   gexc.PreconditionFailed: "it changed since it was listed",
                   gexc.NotFound: "it is already gone"}[type(exc)]
            raise DeleteRefused(f"{url}: not deleted: {why}") from exc
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc

    def create_lock(self, name: str, data: bytes) -> LockObject | None:
        from google.api_core import exceptions as gexc

        blob, url = self._blob(name), f"{self.url}{name}"
        try:
            # if_generation_match=0: GCS creates it only where no live object has the name, and
            # answers the others 412. (gcp-storage-emulator ignores the precondition.)
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
        except gexc.PreconditionFailed:
            return None
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc
        return LockObject(name, url, data, blob.time_created, blob.generation)

    def read_lock(self, name: str) -> LockObject | None:
        from google.api_core import exceptions as gexc

        url = f"{self.url}{name}"
        try:
            blob = self.client.bucket(self.bucket_name).get_blob(self.prefix + name)
            if blob is None:
                return None
            # Before the download, which resets the blob's properties from its response headers.
            created_at, generation = blob.time_created, blob.generation
            data = blob.download_as_bytes(if_generation_match=generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None  # released, or replaced, between the two calls: the caller asks again
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc
        return LockObject(name, url, data, created_at, generation)

    def delete_lock(self, lock: LockObject) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self._blob(lock.name).delete(if_generation_match=lock.generation)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return False
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, lock.url) from exc
        return True

    def stored_crc32c(self, name: str, generation: int | str | None = None) -> str | None:
        url = f"{self.url}{name}"
        try:
            blob = self.client.bucket(self.bucket_name).get_blob(self.prefix + name, generation=generation)
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc
        if blob is None:
            raise StorageError(f"{url}: not found")
        return blob.crc32c

    def local_path(self, name: str) -> None:
        return None  # an object must be downloaded to be read at random

    def read_bytes(self, name: str) -> bytes:
        url = f"{self.url}{name}"
        try:
            return self._blob(name).download_as_bytes()
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc

    def open_reader(self, name: str, generation: int | str | None = None) -> Iterator[bytes]:
        url = f"{self.url}{name}" + (f"#{generation}" if generation else "")
        blob = self.client.bucket(self.bucket_name).blob(self.prefix + name, generation=generation)
        try:
            # Each ranged read is retried by the client on 429/5xx and resets; the generation
            # pin means a retry can never splice in bytes of an object replaced meanwhile.
            with blob.open("rb", chunk_size=self.chunk_size) as f:
                while chunk := f.read(self.chunk_size):
                    yield chunk
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, url) from exc


class GcsWriter(ObjectWriter):
    """A resumable upload: GCS creates the object only when close() commits the last chunk."""

    def __init__(self, store: GcsStore, blob, url: str):
        self.store, self.blob, self.url = store, blob, url
        self._writer = None
        self._written = 0

    def write(self, chunk: bytes) -> None:
        try:
            if self._writer is None:
                self._writer = self.blob.open("wb", chunk_size=self.store.chunk_size, if_generation_match=0,
                                              content_type="application/octet-stream")
            self._writer.write(chunk)
            self._written += len(chunk)
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, self.url) from exc

    def commit(self) -> StoredObject:
        try:
            if self._writer is None:
                self.blob.upload_from_string(b"", if_generation_match=0)
            else:
                self._writer.close()
            self.blob.reload()
        except _gcs_errors() as exc:
            raise translate_gcs_error(exc, self.url) from exc
        stored = self.store._describe(self.blob)
        if stored.size_bytes != self._written:
            raise StorageError(f"{self.url}: stored {stored.size_bytes} bytes but {self._written} were sent")
        return stored

    def abort(self) -> None:
        """Cancel the resumable session: nothing appears under the final name.

        Merely dropping the writer is not enough: io.BufferedIOBase.__del__ calls close(), which
        would commit whatever had been written as if it were the whole backup."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.terminate()
        except Exception:  # cancelling is best effort; an unfinished session expires on its own
            pass
        finally:
            writer._buffer.close()  # whatever happened above, never let close() commit it
