"""The S3 store against moto's S3 server (real HTTP, the real boto3): streamed multipart writes
with a full-object CRC32C, never overwriting, pinned reads that catch rot at rest and resume a cut
stream, versioned deletes that Object Lock can refuse, lock objects, and translated errors."""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google_crc32c
import pytest

from maint.errors import ChecksumMismatch, DeleteRefused, StorageError
from maint.locks import LockRecord
from maint.tasks.storage.s3 import MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, S3Store, part_size
from tests.conftest import rot_s3_object

MiB = 1024 * 1024
TTL = timedelta(hours=12)


def _store(bucket, prefix: str = "db/", **kwargs) -> S3Store:
    return S3Store(f"s3://{bucket.name}/{prefix}", endpoint_url=bucket.endpoint_url, region=bucket.region,
                   part_size=MIN_PART_BYTES, **kwargs)


def _crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def _write(store: S3Store, name: str, data: bytes, chunk: int = MiB):
    writer = store.open_writer(name)
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])
    return writer.commit()


def _uploads(bucket) -> list[dict]:
    return bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])


def _versions(bucket, key: str) -> tuple[list, list]:
    listed = bucket.client.list_object_versions(Bucket=bucket.name, Prefix=key)
    return ([v for v in listed.get("Versions", []) if v["Key"] == key],
            [m for m in listed.get("DeleteMarkers", []) if m["Key"] == key])


# --- part sizes (pure) ---------------------------------------------------------------------------

@pytest.mark.parametrize("first", [MIN_PART_BYTES, 8 * MiB, 64 * MiB, MAX_PART_BYTES])
def test_ten_thousand_parts_hold_a_tebibyte_each_within_s3s_limits(first):
    sizes = [part_size(n, first) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) >= 1024**4
    assert all(MIN_PART_BYTES <= size <= MAX_PART_BYTES for size in sizes)
    assert sizes[0] == first and sizes == sorted(sizes), "never shrinking: memory is bounded by the first"


# --- writing -------------------------------------------------------------------------------------

def test_round_trip_streams_parts_and_stores_the_full_object_crc32c(s3_bucket):
    store = _store(s3_bucket)
    data = os.urandom(12 * MiB + 12345)  # 5 MiB, 5 MiB and the rest

    stored = _write(store, "prod.dump", data)

    assert (stored.name, stored.url, stored.size_bytes) == ("prod.dump", f"s3://{s3_bucket.name}/db/prod.dump",
                                                            len(data))
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="db/prod.dump", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3"), "a multipart upload of three parts"
    assert stored.generation == head["VersionId"] and isinstance(stored.generation, str)
    assert stored.crc32c == head["ChecksumCRC32C"] == _crc32c(data)
    assert head["ChecksumType"] == "FULL_OBJECT"
    crc32 = base64.b64encode(binascii.crc32(data).to_bytes(4, "big")).decode()
    assert stored.crc32c != crc32, "moto computed CRC32C (its s3crc32c extra), not its CRC32 fallback"
    assert b"".join(store.open_reader("prod.dump", stored.generation)) == data
    [listed] = store.list_objects()
    assert (listed.name, listed.size_bytes, listed.generation) == ("prod.dump", len(data), stored.generation)
    assert _uploads(s3_bucket) == []


def test_an_earlier_backup_is_never_overwritten(s3_bucket):
    store = _store(s3_bucket)
    first = _write(store, "prod.dump", b"first")
    with pytest.raises(StorageError, match="already exists: refusing to overwrite"):
        store.open_writer("prod.dump")

    # Two writers racing for one name: the one to complete second is refused by If-None-Match.
    early, late = store.open_writer("race.dump"), store.open_writer("race.dump")
    early.write(b"early")
    late.write(b"late")
    early.commit()
    with pytest.raises(StorageError, match=r"race\.dump already exists: refusing to overwrite"):
        late.commit()
    assert b"".join(store.open_reader("race.dump")) == b"early"
    assert _uploads(s3_bucket) == [], "the refused upload was aborted"
    with pytest.raises(StorageError, match="already exists: refusing to overwrite"):
        store.put_bytes("prod.dump", b"manifest?")
    assert [v["VersionId"] for v in _versions(s3_bucket, "db/prod.dump")[0]] == [first.generation]


def test_an_exception_mid_write_leaves_no_object_and_no_upload(s3_bucket):
    store = _store(s3_bucket)
    writer = store.open_writer("prod.dump")
    with pytest.raises(RuntimeError):
        try:
            writer.write(os.urandom(11 * MiB))  # two parts uploaded
            assert len(_uploads(s3_bucket)) == 1
            raise RuntimeError("pg_dump died")
        except BaseException:
            writer.abort()
            raise
    writer.abort()  # twice is harmless
    assert store.list_objects() == [] and _uploads(s3_bucket) == []


_KILLED_WRITER = """
import sys
from maint.tasks.storage.s3 import S3Store
store = S3Store(sys.argv[1], endpoint_url=sys.argv[2], region=sys.argv[3], part_size=5 * 1024 * 1024)
writer = store.open_writer("prod.dump")
writer.write(b"x" * (11 * 1024 * 1024))
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_killed_writer_leaves_nothing_under_the_final_name(s3_bucket):
    store = _store(s3_bucket)
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, store.url, s3_bucket.endpoint_url,
                                s3_bucket.region], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    assert store.list_objects() == []
    [upload] = _uploads(s3_bucket)  # incomplete, invisible; a lifecycle rule reclaims it
    assert upload["Key"] == "db/prod.dump"


# --- reading -------------------------------------------------------------------------------------

def test_rot_at_rest_is_caught_by_the_pinned_read(s3_bucket):
    store = _store(s3_bucket)
    data = os.urandom(6 * MiB)
    stored = _write(store, "prod.dump", data)
    rotted = bytearray(data)
    rotted[len(data) // 2] ^= 0x01
    rot_s3_object(s3_bucket.name, "db/prod.dump", bytes(rotted))

    with pytest.raises(ChecksumMismatch) as caught:
        for _ in store.open_reader("prod.dump", stored.generation):
            pass
    message = str(caught.value)
    assert f"s3://{s3_bucket.name}/db/prod.dump" in message and stored.crc32c in message
    assert _crc32c(bytes(rotted)) in message and "the object is corrupt" in message


def test_an_object_without_a_crc32c_is_just_streamed(s3_bucket):
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="db/other-tool.dump", Body=b"from elsewhere")
    assert b"".join(_store(s3_bucket).open_reader("other-tool.dump")) == b"from elsewhere"


class _CuttingProxy:
    """Forwards to moto, but cuts the first whole-object GET off after `cut_after` body bytes, as a
    reset connection would; `ranges` records each GET's Range header."""

    def __init__(self, target: str, cut_after: int):
        import http.client
        from urllib.parse import urlparse

        upstream, proxy = urlparse(target), self
        self.ranges: list[str | None] = []
        self.cut = False

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                connection.request(self.command, self.path, body=body,
                                   headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                response = connection.getresponse()
                data = response.read()
                cut = self.command == "GET" and not proxy.cut and response.status == 200 and len(data) > cut_after
                if self.command == "GET":
                    proxy.ranges.append(self.headers.get("Range"))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                if cut:
                    proxy.cut = True
                    self.wfile.write(data[:cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_read_cut_off_mid_stream_resumes_from_the_byte_reached(s3_bucket):
    data = os.urandom(3 * MiB)
    stored = _write(_store(s3_bucket), "prod.dump", data)
    proxy = _CuttingProxy(s3_bucket.endpoint_url, cut_after=MiB + 7)
    try:
        store = S3Store(f"s3://{s3_bucket.name}/db/", endpoint_url=proxy.url, region=s3_bucket.region,
                        chunk_size=256 * 1024)
        assert b"".join(store.open_reader("prod.dump", stored.generation)) == data
    finally:
        proxy.close()
    assert proxy.cut and proxy.ranges[-1] == f"bytes={MiB + 7}-", proxy.ranges


# --- deleting ------------------------------------------------------------------------------------

def _refuse_bypass(store: S3Store) -> list[str]:
    """Every request's bypass header, as sent: the list must stay empty."""
    seen: list[str] = []

    def record(request, **kwargs):
        seen.extend(v for k, v in request.headers.items() if k.lower() == "x-amz-bypass-governance-retention")

    store.client.meta.events.register("before-send.s3", record)
    return seen


def test_a_versioned_delete_removes_the_version_and_leaves_no_marker(s3_bucket):
    store = _store(s3_bucket)
    stored = _write(store, "prod.dump", b"old backup")

    store.delete("prod.dump", stored.generation)

    assert _versions(s3_bucket, "db/prod.dump") == ([], [])
    with pytest.raises(DeleteRefused, match="already gone"):
        store.delete("prod.dump", stored.generation)


def test_a_delete_pinned_to_a_replaced_version_keeps_the_current_one(s3_bucket):
    store = _store(s3_bucket)
    stored = _write(store, "prod.dump", b"listed")
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key="db/prod.dump", VersionId=stored.generation)
    current = s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="db/prod.dump", Body=b"written since")
    with pytest.raises(DeleteRefused, match="already gone"):
        store.delete("prod.dump", stored.generation)
    assert [v["VersionId"] for v in _versions(s3_bucket, "db/prod.dump")[0]] == [current["VersionId"]]


def test_an_unversioned_bucket_deletes_the_null_version(s3_server, s3_credentials):
    from tests.conftest import _make_s3_bucket

    bucket = _make_s3_bucket(s3_server)
    store = _store(bucket)
    stored = _write(store, "prod.dump", b"backup")
    assert stored.generation is None and store.list_objects()[0].generation is None

    store.delete("prod.dump", stored.generation)
    assert store.list_objects() == []


@pytest.mark.parametrize("protection", ["legal hold", "governance retention"])
def test_object_lock_refuses_the_delete_and_is_never_bypassed(s3_locked_bucket, protection):
    bucket = s3_locked_bucket
    store = _store(bucket)
    sent_bypass = _refuse_bypass(store)
    stored = _write(store, "prod.dump", b"protected backup")
    if protection == "legal hold":
        bucket.client.put_object_legal_hold(Bucket=bucket.name, Key="db/prod.dump", VersionId=stored.generation,
                                            LegalHold={"Status": "ON"})
    else:
        bucket.client.put_object_retention(Bucket=bucket.name, Key="db/prod.dump", VersionId=stored.generation,
                                           Retention={"Mode": "GOVERNANCE", "RetainUntilDate":
                                                      datetime.now(timezone.utc) + timedelta(days=1)})

    with pytest.raises(DeleteRefused) as refused:
        store.delete("prod.dump", stored.generation)

    assert f"s3://{bucket.name}/db/prod.dump" in str(refused.value)
    assert "Object Lock legal hold or retention" in str(refused.value)
    assert [v["VersionId"] for v in _versions(bucket, "db/prod.dump")[0]] == [stored.generation]
    assert [o.name for o in store.list_objects()] == ["prod.dump"]
    assert sent_bypass == [], "x-amz-bypass-governance-retention was sent"
    if protection == "legal hold":  # let the bucket go
        bucket.client.put_object_legal_hold(Bucket=bucket.name, Key="db/prod.dump", VersionId=stored.generation,
                                            LegalHold={"Status": "OFF"})


# --- listing -------------------------------------------------------------------------------------

def test_listing_shows_direct_children_oldest_first_and_no_deleted_key(s3_bucket):
    store = _store(s3_bucket)
    for name in ("a.dump", "b.dump", "c.dump"):
        _write(store, name, name.encode())
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="db/nested/d.dump", Body=b"deeper")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="elsewhere/e.dump", Body=b"outside")
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key="db/b.dump")  # a delete marker

    listed = store.list_objects()

    assert [o.name for o in listed] == ["a.dump", "c.dump"]
    assert listed[0].created_at <= listed[1].created_at and listed[0].created_at.tzinfo == timezone.utc


# --- lock objects --------------------------------------------------------------------------------

def _store_lock(store, label: str):
    from maint.locks import store_lock_name
    from maint.tasks.storage import StoreLock

    return StoreLock(store, store_lock_name("backup-retention"), label, TTL)


@pytest.mark.parametrize("versioned", [True, False], ids=["by VersionId", "by ETag"])
def test_lock_objects_are_created_once_and_deleted_only_while_ours(s3_server, s3_credentials, versioned):
    from tests.conftest import _make_s3_bucket

    bucket = _make_s3_bucket(s3_server)
    if versioned:
        bucket.client.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
    store = _store(bucket)
    lock = _store_lock(store, "maint test s3")
    name = lock.name
    assert lock.acquire(timedelta(0))
    assert not _store_lock(store, "maint test second").acquire(timedelta(0)), "If-None-Match refused it"
    got = bucket.client.get_object(Bucket=bucket.name, Key=f"db/{name}")
    assert json.loads(got["Body"].read())["holder"] == "maint test s3"
    assert lock.release() and store.read_lock(name) is None and not lock.release()

    mine = _store_lock(store, "maint test slow")
    assert mine.acquire(timedelta(0))
    bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{name}",
                                **({"VersionId": got["VersionId"]} if versioned else {}))
    for version in _versions(bucket, f"db/{name}")[0]:  # the slow run's lock is taken over meanwhile
        bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{name}", VersionId=version["VersionId"])
    theirs = LockRecord.new("maint test took it over", datetime.now(timezone.utc), TTL).to_json()
    assert store.create_lock(name, theirs) is not None
    assert not mine.release(), "no longer ours"
    assert store.read_lock(name).data == theirs, "and theirs stays"

    dead = LockRecord.new("maint test dead", datetime.now(timezone.utc) - timedelta(hours=13), TTL).to_json()
    assert store.delete_lock(store.read_lock(name))
    bucket.client.put_object(Bucket=bucket.name, Key=f"db/{name}", Body=dead)
    taker = _store_lock(store, "maint test next")
    assert taker.acquire(timedelta(0)) and taker.taken_over.label == "maint test dead"
    assert taker.release()
    assert store.local_path(name) is None


# --- errors --------------------------------------------------------------------------------------

def test_a_missing_bucket_is_named(s3_server, s3_credentials):
    store = S3Store("s3://maint-no-such-bucket/db/", endpoint_url=s3_server.url, region="eu-west-1")
    for call in (store.check_writable, store.list_objects):
        with pytest.raises(StorageError, match=r"s3://maint-no-such-bucket.*does not exist \(NoSuchBucket\)"):
            call()
    with pytest.raises(StorageError, match=r"s3://maint-no-such-bucket/db/prod\.dump"):
        list(store.open_reader("prod.dump"))


def test_a_missing_object_is_named(s3_bucket):
    with pytest.raises(StorageError, match=rf"s3://{s3_bucket.name}/db/gone\.dump: not found"):
        _store(s3_bucket).read_bytes("gone.dump")


def test_missing_credentials_say_where_to_set_them(s3_bucket, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError) as refused:
        _store(s3_bucket).check_writable()
    assert f"s3://{s3_bucket.name}" in str(refused.value)
    assert "access_key_id_env" in str(refused.value) and "standard AWS chain" in str(refused.value)


def test_refused_credentials_say_check_credentials_and_never_the_secret(s3_bucket, monkeypatch):
    from moto import settings

    # moto checks signatures only with authentication on; its IAM then knows no access key at all.
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setenv("MAINT_TEST_S3_KEY_ID", "AKIAMAINTTESTKEY")
    monkeypatch.setenv("MAINT_TEST_S3_SECRET", "maint-test-very-secret")
    store = _store(s3_bucket, access_key_id_env="MAINT_TEST_S3_KEY_ID", secret_access_key_env="MAINT_TEST_S3_SECRET")
    with pytest.raises(StorageError) as refused:
        store.list_objects()
    message = str(refused.value)
    assert f"s3://{s3_bucket.name}" in message and "InvalidAccessKeyId" in message
    assert "check credentials" in message and "$MAINT_TEST_S3_KEY_ID" in message
    assert "maint-test-very-secret" not in message
