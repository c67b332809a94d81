"""A store's backups as every backup duty reads them, and the one interface every store implements.

A backup whose creation time is unknown (no manifest, and a store that reports none) fails
closed: it is never judged fresh, never the newest by default, and never deleted."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone

import pytest

from maint.backups import BackupEntry, group_backups, newest_first
from maint.config import RetentionConfig
from maint.report import Severity
from maint.retention import plan_retention
from maint.tasks.storage import BackupStore, ObjectWriter, StoredObject
from maint.tasks.storage.gcs import GcsStore
from maint.tasks.storage.local import LocalStore, LocalWriter
from maint.tasks.storage.s3 import S3Store
from maint.verification import assess_freshness

NOW = datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)
STORE = "gs://acme-backups/db/"
POLICY = RetentionConfig(store="s", keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1)


def entry(name: str, age: timedelta | None) -> BackupEntry:
    return BackupEntry(name=name, url=STORE + name, kind="custom", size_bytes=100,
                       object_created_at=None if age is None else NOW - age)


def test_group_backups_pairs_dumps_with_manifests_and_ignores_the_rest():
    objects = [StoredObject("b.dump", STORE + "b.dump", 10, NOW - timedelta(hours=1), generation=7),
               StoredObject("b.dump.manifest.json", STORE + "b.dump.manifest.json", 2, NOW, generation=8),
               StoredObject("a.sql.gz", STORE + "a.sql.gz", 5, None),
               StoredObject("notes.txt", STORE + "notes.txt", 1, NOW)]
    grouped = group_backups(objects)
    assert [e.name for e in grouped] == ["a.sql.gz", "b.dump"]  # the undated one sorts as the oldest
    assert grouped[1].manifest_name == "b.dump.manifest.json" and grouped[1].manifest_generation == 8
    assert grouped[0].manifest_name is None and grouped[0].kind == "sql.gz"


def test_an_undated_backup_is_never_the_newest_by_default():
    undated, old = entry("undated.dump", None), entry("old.dump", timedelta(days=30))
    assert newest_first([undated, old]) == [old, undated]
    assert newest_first([undated]) == [undated]


def test_an_undated_newest_backup_is_not_fresh():
    finding = assess_freshness(STORE, entry("x.dump", None), NOW, timedelta(hours=26))
    assert finding.severity is Severity.CRITICAL and "no known creation time" in finding.message
    assert assess_freshness(STORE, entry("y.dump", timedelta(hours=1)), NOW, timedelta(hours=26)).severity is Severity.OK


def test_retention_never_deletes_an_undated_backup():
    backups = [entry("new.dump", timedelta(hours=1)), entry("older.dump", timedelta(days=3)),
               entry("undated.dump", None)]
    plan = plan_retention(backups, POLICY, NOW, rpo=timedelta(hours=26))
    assert [d.backup.name for d in plan.deletions] == ["older.dump"]
    [undated] = [d for d in plan.decisions if d.backup.name == "undated.dump"]
    assert undated.keep and undated.reasons == ("creation time unknown: never deleted",)
    only_undated = plan_retention([entry("undated.dump", None)], POLICY, NOW, rpo=timedelta(hours=26))
    assert not only_undated.deletions and only_undated.refused is None
    stopped = plan_retention([entry("stale.dump", timedelta(days=5)), entry("undated.dump", None)], POLICY, NOW,
                             rpo=timedelta(hours=26))
    assert stopped.refused and not stopped.deletions and len(stopped.decisions) == 2


def test_a_gcs_object_without_a_creation_time_is_described_as_undated():
    from google.cloud.storage import Blob, Bucket

    store = GcsStore("gs://acme-backups/db/")
    blob = Blob("db/x.dump", Bucket(client=None, name="acme-backups"))  # no metadata: time_created is None
    described = store._describe(blob)
    assert described.name == "x.dump" and described.created_at is None


# --- the storage interface -------------------------------------------------------------------------

LIFECYCLE = {"check_writable", "list_objects", "open_reader", "read_bytes", "open_writer", "put_bytes",
             "delete", "local_path", "create_lock", "read_lock", "delete_lock", "stored_crc32c"}


def test_the_store_interface_declares_the_whole_lifecycle_as_abstract():
    assert BackupStore.__abstractmethods__ == LIFECYCLE
    assert ObjectWriter.__abstractmethods__ == {"write", "commit", "abort"}
    for store in (LocalStore, GcsStore, S3Store):
        assert issubclass(store, BackupStore) and not inspect.isabstract(store)
    assert issubclass(LocalWriter, ObjectWriter)


def test_a_store_that_leaves_a_method_out_cannot_be_made():
    class HalfAStore(BackupStore):
        def __init__(self):
            self.url = "x://"

    with pytest.raises(TypeError, match="abstract"):
        HalfAStore()


def test_only_a_directory_has_local_paths(tmp_path):
    (tmp_path / "a.dump").write_bytes(b"x")
    assert LocalStore(f"file://{tmp_path}/").local_path("a.dump") == tmp_path / "a.dump"
    assert GcsStore("gs://acme-backups/db/").local_path("a.dump") is None
