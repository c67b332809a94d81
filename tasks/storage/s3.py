"""Amazon S3 (or an S3-compatible service) as a backup store, through boto3.

Invariants:
- A backup is written through a multipart upload: S3 shows nothing under the final name until
  CompleteMultipartUpload, which is sent with If-None-Match: * so that an existing object is
  never replaced (PutObject of manifests and lock objects likewise). A failed write or commit
  aborts the upload.
- Parts grow (`part_size`) so that 10,000 of them hold more than 1 TiB, and memory per upload is
  flat: a part is buffered in memory up to the first part's size, the rest of a larger one is
  spooled to a temporary file and uploaded from there.
- A full-object CRC32C, computed while streaming, is sent at completion (checksum type
  FULL_OBJECT, every part carrying its own CRC32C): S3 refuses an upload whose assembled bytes
  differ, and returns the value on every read with ChecksumMode, where `open_reader` checks it.
- Reads and deletes are pinned to the listed VersionId. A delete is always DeleteObject with a
  VersionId ("null" on an unversioned bucket): a bare one on a versioned bucket only adds a
  delete marker. BypassGovernanceRetention is never sent: Object Lock always has the last word.
- Every botocore exception becomes a StorageError naming s3://bucket or s3://bucket/key; no
  secret is ever part of a message. No boto3 object leaves this module.

botocore is imported inside functions: loading it costs the CLI a noticeable start-up time.
Clients are made with botocore's own session (what boto3's clients are), each store's with
credentials of its own, all sharing one loader of the service model (`_data_loader`).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import urlparse

import google_crc32c

from maint.digests import crc32c_base64
from maint.errors import ChecksumMismatch, DeleteRefused, StorageError, TransientStorageError
from maint.tasks.environment import resolve_secret
from maint.tasks.storage.base import BackupStore, LockObject, ObjectWriter, StoredObject

log = logging.getLogger("maint.storage.s3")

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part, except the last
MAX_PART_BYTES = 5 * 1024**3  # S3's largest part
MAX_PARTS = 10_000
PARTS_PER_SIZE_STEP = 1000  # the part size doubles every this many parts
_READ_RESUMES = 3  # a read cut off mid-stream resumes from the byte reached this many times
_STANDARD_CHAIN = "the standard AWS chain (AWS_* variables, ~/.aws, the instance's or pod's role)"


def part_size(part_number: int, first: int) -> int:
    """The size of part `part_number` (1-based) when the first is `first` bytes: doubling every
    1,000 parts, at most 5 GiB. From a 5 MiB first part the 10,000 parts hold about 4.9 TiB;
    a dump of unknown size never runs out of parts before 1 TiB."""
    return min(first << ((part_number - 1) // PARTS_PER_SIZE_STEP), MAX_PART_BYTES)


def _crc32c_of(checksum: google_crc32c.Checksum) -> str:
    return crc32c_base64(int.from_bytes(checksum.digest(), "big"))


def _generation(version_id: str | None) -> str | None:
    """S3 reports an unversioned object's VersionId as "null": no version to pin to."""
    return None if not version_id or version_id == "null" else version_id


def _utc(when: datetime | None) -> datetime | None:
    return when.astimezone(timezone.utc) if when else None


def _error_code(exc: Exception) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    return (str(response.get("Error", {}).get("Code", "")),
            response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def translate_s3_error(exc: Exception, what: str, credentials: str = _STANDARD_CHAIN) -> StorageError:
    """botocore exceptions -> StorageError naming the bucket or object (`what`). `credentials`
    says where the credentials came from, for the hint; never the credentials themselves."""
    from botocore import exceptions as bexc

    if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
        return StorageError(f"{what}: no AWS credentials found: set the store's access_key_id_env and "
                            f"secret_access_key_env keys, or provide them through {_STANDARD_CHAIN}")
    code, status = _error_code(exc)
    if code == "NoSuchBucket":
        return StorageError(f"{what}: the bucket does not exist (NoSuchBucket)")
    if code in ("NoSuchKey", "NoSuchVersion") or status == 404:
        return StorageError(f"{what}: not found ({code or status})")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                "TokenRefreshRequired", "AuthorizationHeaderMalformed"):
        return StorageError(f"{what}: S3 refused the credentials ({code}): check credentials, from {credentials}")
    if code == "AccessDenied" or status in (401, 403):
        return StorageError(f"{what}: permission denied ({code or status}): check the policy of the identity "
                            f"from {credentials}, and the bucket policy")
    if code == "PreconditionFailed" or status == 412:
        return StorageError(f"{what}: already exists or changed meanwhile (precondition failed)")
    if code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ConditionalRequestConflict",
                "OperationAborted") or (isinstance(status, int) and (status == 429 or status >= 500)):
        return TransientStorageError(f"{what}: transient error ({code or status})")
    if isinstance(exc, (bexc.ConnectionError, bexc.HTTPClientError, bexc.IncompleteReadError, ConnectionError,
                        TimeoutError)):
        return TransientStorageError(f"{what}: transient error ({exc.__class__.__name__}: {str(exc)[:200]})")
    return StorageError(f"{what}: {code or exc.__class__.__name__}: {str(exc)[:300]}")


@functools.cache
def _s3_errors() -> tuple[type[BaseException], ...]:
    """What a boto3 call can raise; a function so that botocore is imported only when used."""
    from botocore import exceptions as bexc

    return (bexc.BotoCoreError, bexc.ClientError, ConnectionError, TimeoutError)


def _is_code(exc: BaseException, *codes: str | int) -> bool:
    code, status = _error_code(exc)  # type: ignore[arg-type]
    return code in codes or status in codes


@functools.cache
def _data_loader(data_path: str | None):
    """botocore's loader of service models and endpoint rules, one per process: parsing those
    JSON files is most of what creating a client costs (~80 ms; a verification opens its store
    twice, to list and to read). The clients of one boto3 session share their loader in the same
    way; what it caches is only read."""
    from botocore.loaders import create_loader

    return create_loader(data_path)


class S3Store(BackupStore):
    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 part_size: int = 8 * 1024 * 1024, access_key_id_env: str | None = None,
                 secret_access_key_env: str | None = None, session_token_env: str | None = None,
                 chunk_size: int = 8 * 1024 * 1024):
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.endpoint_url, self.region = endpoint_url, region
        self.first_part_bytes = part_size
        self.chunk_size = chunk_size
        self._env = (access_key_id_env, secret_access_key_env, session_token_env)
        self.credentials = (f"${access_key_id_env} and ${secret_access_key_env}" if access_key_id_env
                            else _STANDARD_CHAIN)
        self._client = None
        self._client_lock = threading.Lock()  # list_backups reads manifests from several threads

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
        return self._client

    def _make_client(self):
        """A client of its own session (credentials resolved for this store: its *_env keys, else
        the standard chain as it is now), whose service model comes from the shared loader."""
        import botocore.session
        from botocore.config import Config

        key_env, secret_env, token_env = self._env
        session = botocore.session.get_session()
        session.register_component("data_loader", _data_loader(session.get_config_variable("data_path")))
        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=120,
                        # S3-compatible services behind an endpoint_url rarely serve bucket subdomains.
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"})
        try:
            return session.create_client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config,
                aws_access_key_id=resolve_secret(key_env, field="backup_stores.access_key_id_env"),
                aws_secret_access_key=resolve_secret(secret_env, field="backup_stores.secret_access_key_env"),
                aws_session_token=resolve_secret(token_env, field="backup_stores.session_token_env"))
        except _s3_errors() as exc:
            raise self._error(exc, f"s3://{self.bucket}") from exc

    def _error(self, exc: BaseException, what: str) -> StorageError:
        return translate_s3_error(exc, what, self.credentials)  # type: ignore[arg-type]

    def _key(self, name: str) -> str:
        if "/" in name or not name:
            raise StorageError(f"refusing object name {name!r} in {self.url}: not a plain name")
        return self.prefix + name

    def _describe(self, name: str, head: dict) -> StoredObject:
        return StoredObject(name=name, url=self.url + name, size_bytes=int(head["ContentLength"]),
                            created_at=_utc(head.get("LastModified")), generation=_generation(head.get("VersionId")),
                            crc32c=head.get("ChecksumCRC32C"))

    def _head(self, key: str, version_id: str | None) -> dict:
        pin = {"VersionId": version_id} if version_id else {}
        return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **pin)

    def stored_crc32c(self, name: str, generation: int | str | None = None) -> str | None:
        """From a HEAD pinned to the version: a listing carries no checksum values."""
        try:
            return self._head(self._key(name), str(generation) if generation else None).get("ChecksumCRC32C")
        except _s3_errors() as exc:
            raise self._error(exc, self.url + name) from exc

    def check_writable(self) -> None:
        # Listing needs only what a backup identity has (s3:ListBucket on the prefix); asking for
        # the bucket's own settings would need more.
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except _s3_errors() as exc:
            raise self._error(exc, f"bucket s3://{self.bucket}") from exc

    def list_objects(self) -> list[StoredObject]:
        """The current version of each key directly under the prefix. A key whose latest version
        is a delete marker has no current version among `Versions`, so it is not listed."""
        objects = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            for page in pages:
                for version in page.get("Versions", []):
                    if not version.get("IsLatest"):
                        continue
                    name = version["Key"][len(self.prefix):]
                    objects.append(StoredObject(name=name, url=self.url + name, size_bytes=int(version["Size"]),
                                                created_at=_utc(version["LastModified"]),
                                                generation=_generation(version.get("VersionId"))))
        except _s3_errors() as exc:
            raise self._error(exc, f"bucket s3://{self.bucket}") from exc
        return sorted(objects, key=lambda o: o.created_at)

    def open_writer(self, name: str) -> "S3Writer":
        key, url = self._key(name), self.url + name
        try:  # fail before the dump starts; If-None-Match at completion is what guarantees it
            self.client.head_object(Bucket=self.bucket, Key=key)
            raise StorageError(f"{url} already exists: refusing to overwrite an earlier backup")
        except _s3_errors() as exc:
            if not _is_code(exc, 404, "NoSuchKey"):
                raise self._error(exc, url) from exc
        return S3Writer(self, key, url)

    def put_bytes(self, name: str, data: bytes) -> StoredObject:
        key, url = self._key(name), self.url + name
        try:
            put = self._put_new(key, data, "application/json")
            return self._describe(name, self._head(key, _generation(put.get("VersionId"))))
        except _s3_errors() as exc:
            if _is_code(exc, 412, "PreconditionFailed"):
                raise StorageError(f"{url} already exists: refusing to overwrite it") from exc
            raise self._error(exc, url) from exc

    def _put_new(self, key: str, data: bytes, content_type: str) -> dict:
        """PutObject only where no object has the key (412 otherwise), with the CRC32C S3 checks
        on arrival. The algorithm is named as well as given: an Object Lock bucket with default
        retention refuses a put that names no checksum algorithm (botocore computes none itself
        here, as the value is given; CRC32C would need awscrt)."""
        return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                      IfNoneMatch="*", ChecksumAlgorithm="CRC32C",
                                      ChecksumCRC32C=_crc32c_of(google_crc32c.Checksum(data)))

    def delete(self, name: str, generation: int | str | None = None) -> None:
        key, url = self._key(name), self.url + name
        version_id = str(generation) if generation is not None else "null"
        try:
            # S3 answers 204 to deleting a version that does not exist: ask first, so that an
            # object already gone is reported as such. (moto answers 400 to a HEAD of version
            # "null"; an unversioned object's bare HEAD asks for the same one.)
            self.client.head_object(Bucket=self.bucket, Key=key,
                                    **({"VersionId": version_id} if generation is not None else {}))
            self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except _s3_errors() as exc:
            if _is_code(exc, "AccessDenied", 403):
                raise DeleteRefused(f"{url} (version {version_id}): not deleted: refused (an Object Lock legal hold "
                                    "or retention, or no s3:DeleteObjectVersion permission)") from exc
            if _is_code(exc, "NoSuchKey", "NoSuchVersion", 404):
                raise DeleteRefused(f"{url} (version {version_id}): not deleted: it is already gone") from exc
            raise self._error(exc, url) from exc

    # Lock objects. On a versioned bucket a lock is pinned by its VersionId; on an unversioned one
    # by its ETag (DeleteObject with If-Match), which S3 always quotes, so the two never mix.

    def create_lock(self, name: str, data: bytes) -> LockObject | None:
        key, url = self._key(name), self.url + name
        try:
            put = self._put_new(key, data, "application/json")
            pin = _generation(put.get("VersionId"))
            created_at = _utc(self._head(key, pin)["LastModified"])
        except _s3_errors() as exc:
            # 412: another run's lock exists. 409: another run's create is in flight at this very
            # moment; S3 asks to retry, and the caller's next look finds the winner.
            if _is_code(exc, 412, "PreconditionFailed", 409, "ConditionalRequestConflict"):
                return None
            raise self._error(exc, url) from exc
        return LockObject(name, url, data, created_at, pin or put["ETag"])

    def read_lock(self, name: str) -> LockObject | None:
        key, url = self._key(name), self.url + name
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=key)
            data = got["Body"].read()
        except _s3_errors() as exc:
            if _is_code(exc, "NoSuchKey", 404):
                return None
            raise self._error(exc, url) from exc
        return LockObject(name, url, data, _utc(got["LastModified"]), _generation(got.get("VersionId")) or got["ETag"])

    def delete_lock(self, lock: LockObject) -> bool:
        key = self._key(lock.name)
        pinned_by_etag = str(lock.generation).startswith('"')
        try:
            if pinned_by_etag:
                self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=str(lock.generation))
            else:  # a version that is gone would be deleted with 204 all the same: ask first
                self.client.head_object(Bucket=self.bucket, Key=key, VersionId=str(lock.generation))
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=str(lock.generation))
        except _s3_errors() as exc:
            if _is_code(exc, "NoSuchKey", "NoSuchVersion", 404, "PreconditionFailed", 412):
                return False
            raise self._error(exc, lock.url) from exc
        return True

    def local_path(self, name: str) -> None:
        return None  # an object must be downloaded to be read at random

    def read_bytes(self, name: str) -> bytes:
        key, url = self._key(name), self.url + name
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except _s3_errors() as exc:
            raise self._error(exc, url) from exc

    def open_reader(self, name: str, generation: int | str | None = None) -> Iterator[bytes]:
        """Stream the object (pinned to `generation`), checking the full-object CRC32C S3 reports.

        A read cut off mid-stream resumes with a Range request from the byte reached, pinned to
        the same version (and ETag), so a resumed read can never splice in another object."""
        key, url = self._key(name), self.url + name
        pin = {"VersionId": str(generation)} if generation is not None else {}
        computed, got, resumes = google_crc32c.Checksum(), 0, 0
        stored_crc = etag = None
        size = None
        while size is None or got < size:
            try:
                if size is None:
                    response = self.client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **pin)
                    size, etag = int(response["ContentLength"]), response.get("ETag")
                    stored_crc = _full_object_crc32c(response)
                else:  # a ranged response carries no full-object checksum: ask for none
                    same_object = {"IfMatch": etag} if etag else {}
                    response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={got}-",
                                                      **pin, **same_object)
                body = response["Body"]
                try:
                    for chunk in body.iter_chunks(self.chunk_size):
                        computed.update(chunk)
                        got += len(chunk)
                        yield chunk
                finally:
                    body.close()
                if got < size:
                    raise TransientStorageError(f"{url}: the response ended after {got} of {size} bytes")
            except _s3_errors() + (TransientStorageError,) as exc:
                if _is_stream_cut(exc) and resumes < _READ_RESUMES:
                    resumes += 1
                    log.warning("reading %s: cut off after %d bytes (%s); resuming there", url, got, exc)
                    continue
                if _is_botocore_checksum_failure(exc):
                    raise ChecksumMismatch(f"{url}: {exc}: the object is corrupt") from exc
                if isinstance(exc, TransientStorageError):
                    raise
                raise self._error(exc, url) from exc
        if stored_crc is not None and _crc32c_of(computed) != stored_crc:
            raise ChecksumMismatch(f"{url}: S3 holds CRC32C {stored_crc} but the bytes read give "
                                   f"{_crc32c_of(computed)}: the object is corrupt")


def _full_object_crc32c(response: dict) -> str | None:
    """The CRC32C of the whole object, if the response carries one. A COMPOSITE checksum (another
    tool's multipart upload: a checksum of the parts' checksums, "…-N") is not comparable."""
    value = response.get("ChecksumCRC32C")
    if not value or response.get("ChecksumType") == "COMPOSITE" or "-" in value:
        return None
    return value


def _is_stream_cut(exc: BaseException) -> bool:
    from botocore import exceptions as bexc

    return isinstance(exc, (bexc.ResponseStreamingError, bexc.IncompleteReadError, bexc.ReadTimeoutError,
                            bexc.ConnectionClosedError, TransientStorageError, ConnectionError, TimeoutError))


def _is_botocore_checksum_failure(exc: BaseException) -> bool:
    """botocore itself checks a CRC32 or SHA response checksum (an object another tool wrote)."""
    from botocore import exceptions as bexc

    return isinstance(exc, bexc.FlexibleChecksumError)


class S3Writer(ObjectWriter):
    """A multipart upload, started with the first part. Nothing is visible until `commit`."""

    def __init__(self, store: S3Store, key: str, url: str):
        self.store, self.key, self.url = store, key, url
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._object_crc = google_crc32c.Checksum()
        self._written = 0
        self._start_part()

    def _start_part(self) -> None:
        # In memory up to the first part's size; a larger part rolls over to a temporary file.
        self._part = tempfile.SpooledTemporaryFile(max_size=self.store.first_part_bytes, prefix="maint-s3-part-")
        self._part_crc = google_crc32c.Checksum()
        self._part_bytes = 0

    @property
    def _part_limit(self) -> int:
        return part_size(len(self._parts) + 1, self.store.first_part_bytes)

    def write(self, chunk: bytes) -> None:
        rest = bytes(chunk)  # a copy only of a bytearray or memoryview, which google_crc32c refuses
        try:
            while rest:
                room = self._part_limit - self._part_bytes
                piece, rest = (rest, b"") if len(rest) <= room else (rest[:room], rest[room:])
                self._part.write(piece)
                self._part_crc.update(piece)
                self._object_crc.update(piece)
                self._part_bytes += len(piece)
                self._written += len(piece)
                if self._part_bytes == self._part_limit:
                    self._upload_part()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, _s3_errors()):
                raise self.store._error(exc, self.url) from exc
            raise

    def _upload_part(self) -> None:
        client, store = self.store.client, self.store
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self.url}: more than {MAX_PARTS} parts; the backup is too large for S3")
        if self._upload_id is None:
            self._upload_id = client.create_multipart_upload(
                Bucket=store.bucket, Key=self.key, ContentType="application/octet-stream",
                ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT")["UploadId"]
        crc = _crc32c_of(self._part_crc)
        self._part.seek(0)
        # The part's own CRC32C: S3 checks it on arrival, and the FULL_OBJECT type requires it
        # in the completion's part list too.
        uploaded = client.upload_part(Bucket=store.bucket, Key=self.key, UploadId=self._upload_id,
                                      PartNumber=number, Body=self._part, ContentLength=self._part_bytes,
                                      ChecksumAlgorithm="CRC32C", ChecksumCRC32C=crc)
        self._parts.append({"PartNumber": number, "ETag": uploaded["ETag"], "ChecksumCRC32C": crc})
        self._part.close()
        self._start_part()

    def commit(self) -> StoredObject:
        store = self.store
        try:
            if self._part_bytes or not self._parts:  # an empty object is one empty part
                self._upload_part()
            # moto neither checks the part CRCs nor the full-object one sent here, nor
            # MpuObjectSize, and returns no checksum in this response; S3 does all of it.
            completed = store.client.complete_multipart_upload(
                Bucket=store.bucket, Key=self.key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts}, ChecksumType="FULL_OBJECT",
                ChecksumCRC32C=_crc32c_of(self._object_crc), MpuObjectSize=self._written, IfNoneMatch="*")
            self._upload_id = None
            head = store._head(self.key, _generation(completed.get("VersionId")))
        except BaseException as exc:
            self.abort()
            if isinstance(exc, _s3_errors()) and _is_code(exc, 412, "PreconditionFailed"):
                raise StorageError(f"{self.url} already exists: refusing to overwrite an earlier backup") from exc
            if isinstance(exc, _s3_errors()):
                raise store._error(exc, self.url) from exc
            raise
        stored = store._describe(self.key[len(store.prefix):], head)
        if completed.get("ChecksumCRC32C"):
            stored = StoredObject(**{**stored.__dict__, "crc32c": completed["ChecksumCRC32C"]})
        if stored.size_bytes != self._written:
            raise StorageError(f"{self.url}: stored {stored.size_bytes} bytes but {self._written} were sent")
        return stored

    def abort(self) -> None:
        """Abort the multipart upload: its parts are discarded and nothing appears under the
        final name. Safe to call twice, and after a commit."""
        upload_id, self._upload_id = self._upload_id, None
        self._part.close()
        if upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=upload_id)
        except _s3_errors() as exc:
            # Best effort: the parts are invisible either way, and a lifecycle rule
            # (AbortIncompleteMultipartUpload) reclaims what a failed abort leaves.
            log.warning("could not abort the multipart upload of %s: %s", self.url, self.store._error(exc, self.url))
