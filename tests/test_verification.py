"""backup-verification: pure decisions table-driven; the duty against real backups on both stores,
a corruption corpus, backups made by other tools, and transient faults during the read."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from maint.backups import BackupEntry, Manifest, backup_kind, newest_first
from maint.report import Severity
from maint.verification import GzipSqlReader, PlainSqlReader, assess_freshness, assess_size
from tests.conftest import DB_PASSWORD_ENV, rot_gcs_object, run_json, write_config
from tests.servers import FlakyProxy

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc)
STORE = "gs://acme/db/"


def entry(name="a.dump", size=1000, age=timedelta(hours=1), manifest_age=None) -> BackupEntry:
    manifest = None
    if manifest_age is not None:
        manifest = Manifest(database="prod", dbname="app", host="h", port=5432, server_version="15",
                            pg_dump_version="15", snapshot_time=NOW - manifest_age, started_at=NOW,
                            finished_at=NOW, dump_name=name, size_bytes=size, sha256="0", crc32c="0")
    return BackupEntry(name=name, url=STORE + name, kind=backup_kind(name) or "custom", size_bytes=size,
                       object_created_at=NOW - age, manifest=manifest)


# --- pure decisions ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [("x.dump", "custom"), ("x.sql.gz", "sql.gz"), ("x.sql", "sql"),
                                        ("x.backup", "custom"), ("x.dump.manifest.json", None), ("notes.txt", None)])
def test_backup_kind(name, kind):
    assert backup_kind(name) == kind


def test_newest_is_by_real_creation_time_never_by_name():
    by_name_last = entry("zzz.dump", age=timedelta(days=3))
    really_newest = entry("aaa.dump", age=timedelta(hours=2))
    copied_late_but_old = entry("mmm.dump", age=timedelta(minutes=1), manifest_age=timedelta(days=9))
    assert newest_first([by_name_last, really_newest, copied_late_but_old])[0] is really_newest


@pytest.mark.parametrize("age, rpo, severity", [
    (timedelta(hours=25), timedelta(hours=26), Severity.OK),
    (timedelta(hours=31), timedelta(hours=26), Severity.CRITICAL),
    (timedelta(days=8), timedelta(days=7), Severity.CRITICAL),
])
def test_freshness(age, rpo, severity):
    finding = assess_freshness(STORE, entry(age=age), NOW, rpo)
    assert finding.severity is severity
    if severity is Severity.CRITICAL:
        assert "old" in finding.message and "RPO is" in finding.message and STORE + "a.dump" in finding.message
        assert finding.hint


def test_freshness_uses_the_manifest_snapshot_time():
    late_copy = entry(age=timedelta(minutes=5), manifest_age=timedelta(hours=30))
    assert assess_freshness(STORE, late_copy, NOW, timedelta(hours=26)).severity is Severity.CRITICAL


@pytest.mark.parametrize("newest, previous, severity, words", [
    (0, [1000, 1000], Severity.CRITICAL, "empty (0 bytes)"),
    (1000, [], Severity.OK, "no predecessors"),
    (1000, [900, 1100, 1000], Severity.OK, "100.0% of the median"),
    (499, [1000, 1000, 1000], Severity.WARNING, "49.9% of the median"),
    (500, [1000, 1000, 1000], Severity.OK, "50.0% of the median"),
    (2000, [1000, 1000, 1000], Severity.OK, "200.0% of the median"),
    (2001, [1000, 1000, 1000], Severity.WARNING, "200.1% of the median"),
    (1000, [100, 100000, 1000, 1000, 1000], Severity.OK, "100.0% of the median"),  # median, not mean
])
def test_size_against_the_median_of_predecessors(newest, previous, severity, words):
    finding = assess_size(STORE, entry(size=newest), [entry(f"p{i}.dump", size=s) for i, s in enumerate(previous)])
    assert finding.severity is severity and words in finding.message


def test_size_warning_names_both_sizes():
    finding = assess_size(STORE, entry(size=100 * 1024), [entry("p.dump", size=1024 * 1024)])
    assert "100.0 KiB" in finding.message and "1.0 MiB" in finding.message


SQL = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (i int);\n" + b"-- filler\n" * 5000 + \
      b"--\n-- PostgreSQL database dump complete\n--\n\n"


def _feed(reader, data: bytes, chunk: int = 777):
    for i in range(0, len(data), chunk):
        reader.feed(data[i:i + chunk])
    return reader.finish()


@pytest.mark.parametrize("data, ok, words", [
    (gzip.compress(SQL), True, ""),
    (gzip.compress(SQL[:3000]) + gzip.compress(SQL[3000:]), True, ""),  # multi-member, like `cat a.gz b.gz`
    (gzip.compress(SQL)[:-20], False, "truncated"),
    (gzip.compress(SQL[:-60]), False, "dump complete"),  # pg_dump died: no closing line
    (gzip.compress(SQL)[:200] + b"\x00garbage" + gzip.compress(SQL)[208:], False, "corrupt"),
    (b"", False, "dump complete"),
])
def test_gzip_sql_reader(data, ok, words):
    passed, detail = _feed(GzipSqlReader(), data)
    assert passed is ok and words in detail


@pytest.mark.parametrize("data, ok", [(SQL, True), (SQL[:-50], False), (b"", False)])
def test_plain_sql_reader(data, ok):
    assert _feed(PlainSqlReader(), data)[0] is ok


# --- the duty against real backups ---------------------------------------------------------------

@pytest.fixture(scope="module")
def good_backup(pg, prefect_harness, tmp_path_factory):
    """A backup made by maint's own backup duty: (dump bytes, manifest dict, dump name)."""
    from maint.flows.backup import backup

    store = tmp_path_factory.mktemp("made")
    config = write_config(tmp_path_factory.mktemp("cfg") / "maint.toml", pg, f"file://{store}/")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_PASSWORD_ENV, pg.password)
        assert backup(config_path=str(config))["status"] == "ok"
    [dump] = store.glob("*.dump")
    return dump.read_bytes(), json.loads(Path(str(dump) + ".manifest.json").read_text()), dump.name


@pytest.fixture(scope="module")
def plain_sql(pg) -> bytes:
    return subprocess.run(["pg_dump", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser, "shop"],
                          check=True, capture_output=True, env={**os.environ, "PGPASSWORD": pg.password}).stdout


@pytest.fixture(scope="module")
def other_tool_dump(pg) -> bytes:
    """A custom-format dump written to a file by someone else's script (seekable, no manifest)."""
    return subprocess.run(["pg_dump", "-Fc", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser, "shop"],
                          check=True, capture_output=True, env={**os.environ, "PGPASSWORD": pg.password}).stdout


def _local_store(tmp_path: Path, files: dict[str, bytes], ages: dict[str, timedelta] | None = None) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    now = time.time()
    for name, data in files.items():
        (store / name).write_bytes(data)
        age = (ages or {}).get(name, timedelta(minutes=5))
        os.utime(store / name, (now - age.total_seconds(), now - age.total_seconds()))
    return store


def _verify(capsys, tmp_path, pg, store_url: str, **config) -> tuple[int, dict[str, dict]]:
    cfg = write_config(tmp_path / "maint.toml", pg, store_url, **config)
    code, report = run_json(capsys, cfg, "backup-verification")
    by_check = {}
    for f in report["findings"]:
        assert f["check"] not in by_check, f"one finding per check and store: {report['findings']}"
        by_check[f["check"]] = f
    return code, by_check


def _manifest_bytes(manifest: dict, **changes) -> bytes:
    return json.dumps({**manifest, **changes}).encode()


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def test_good_backup_passes_on_a_local_directory(pg, db_password, prefect_harness, tmp_path, capsys, good_backup):
    data, manifest, name = good_backup
    store = _local_store(tmp_path, {name: data, name + ".manifest.json": _manifest_bytes(manifest)})

    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")

    assert code == 0, found
    assert set(found) == {"presence", "freshness", "size", "manifest", "checksum", "archive"}
    assert "sha256 from the manifest" in found["checksum"]["message"]
    assert "read in full by pg_restore" in found["archive"]["message"]
    assert all(f["subject"] == f"file://{store}/" for f in found.values())


def test_good_backup_passes_on_gcs(pg, db_password, prefect_harness, tmp_path, capsys, good_backup, gcs_bucket):
    data, manifest, name = good_backup
    gcs_bucket.blob(f"db/{name}").upload_from_string(data)
    gcs_bucket.blob(f"db/{name}.manifest.json").upload_from_string(_manifest_bytes(manifest))

    code, found = _verify(capsys, tmp_path, pg, f"gs://{gcs_bucket.name}/db/")

    assert code == 0, found
    assert "crc32c from the object's metadata" in found["checksum"]["message"]
    assert f"gs://{gcs_bucket.name}/db/{name}" in found["archive"]["message"]


@pytest.mark.parametrize("case", ["truncated", "flipped", "zero", "text", "manifest-size"])
def test_corruption_corpus_on_a_local_directory(pg, db_password, prefect_harness, tmp_path, capsys, good_backup, case):
    data, manifest, name = good_backup
    files = {name + ".manifest.json": _manifest_bytes(manifest)}
    expected: dict[str, str] = {}
    if case == "truncated":
        files[name] = data[: len(data) * 2 // 3]
        expected = {"manifest": "manifest says", "archive": "pg_restore failed"}
    elif case == "flipped":
        files[name] = _flip_middle_byte(data)
        expected = {"checksum": "sha256 from the manifest is", "archive": "pg_restore failed"}
    elif case == "zero":
        files[name] = b""
        expected = {"size": "empty (0 bytes)", "archive": "pg_restore failed"}
    elif case == "text":
        files[name] = b"this is not a dump, it is a README\n" * 100
        expected = {"archive": "does not appear to be a valid archive"}
    elif case == "manifest-size":
        files[name] = data
        files[name + ".manifest.json"] = _manifest_bytes(manifest, size_bytes=manifest["size_bytes"] + 1)
        expected = {"manifest": f"manifest says {manifest['size_bytes'] + 1} bytes"}
    store = _local_store(tmp_path, files)

    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")

    assert code == 2
    for check, words in expected.items():
        assert found[check]["severity"] == "critical", found
        assert words in found[check]["message"], found[check]
        assert f"file://{store}/{name}" in found[check]["message"] and found[check]["hint"]


def test_flipped_byte_without_a_manifest_is_still_caught_by_reading_the_archive(pg, db_password, prefect_harness,
                                                                                tmp_path, capsys, other_tool_dump):
    store = _local_store(tmp_path, {"nightly.dump": _flip_middle_byte(other_tool_dump)})
    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")
    assert code == 2 and found["archive"]["severity"] == "critical"
    assert found["checksum"]["severity"] == "warning" and "no checksum to compare" in found["checksum"]["message"]


def test_corrupt_gzip_is_critical(pg, db_password, prefect_harness, tmp_path, capsys, plain_sql):
    compressed = gzip.compress(plain_sql)
    store = _local_store(tmp_path, {"nightly.sql.gz": _flip_middle_byte(compressed)})
    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")
    assert code == 2 and found["archive"]["severity"] == "critical"
    assert "gzip" in found["archive"]["message"]


def test_checksum_mismatch_against_gcs_metadata(pg, db_password, prefect_harness, tmp_path, capsys, other_tool_dump,
                                                gcs_bucket, gcs_server):
    gcs_bucket.blob("db/nightly.dump").upload_from_string(other_tool_dump)
    rot_gcs_object(gcs_server, gcs_bucket.name, "db/nightly.dump", _flip_middle_byte(other_tool_dump))

    code, found = _verify(capsys, tmp_path, pg, f"gs://{gcs_bucket.name}/db/")

    assert code == 2
    assert found["checksum"]["severity"] == "critical"
    assert "crc32c from the object's metadata is" in found["checksum"]["message"]


@pytest.mark.parametrize("name, fixture", [("nightly.dump", "other_tool_dump"), ("nightly.sql.gz", "plain_sql"),
                                           ("nightly.sql", "plain_sql")])
def test_backups_made_by_other_tools(pg, db_password, prefect_harness, tmp_path, capsys, request, name, fixture):
    data = request.getfixturevalue(fixture)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    store = _local_store(tmp_path, {name: data})

    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")

    assert code == 1, found  # readable, but nothing to check a checksum against
    assert found["archive"]["severity"] == "ok" and found["checksum"]["severity"] == "warning"


def test_other_tools_dump_on_gcs_is_checked_against_object_metadata(pg, db_password, prefect_harness, tmp_path, capsys,
                                                                    other_tool_dump, gcs_bucket):
    gcs_bucket.blob("db/nightly.dump").upload_from_string(other_tool_dump)
    code, found = _verify(capsys, tmp_path, pg, f"gs://{gcs_bucket.name}/db/")
    assert code == 0, found
    assert found["checksum"]["message"].endswith("crc32c from the object's metadata match")


def test_stale_backup_is_critical_with_age_and_rpo(pg, db_password, prefect_harness, tmp_path, capsys, other_tool_dump):
    store = _local_store(tmp_path, {"nightly.dump": other_tool_dump}, {"nightly.dump": timedelta(hours=30)})
    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")
    assert code == 2 and found["freshness"]["severity"] == "critical"
    assert "is 1d6h old" in found["freshness"]["message"] and "RPO is 1d2h" in found["freshness"]["message"]


def test_newest_by_modification_time_is_the_one_read(pg, db_password, prefect_harness, tmp_path, capsys,
                                                     other_tool_dump):
    """`a.dump` sorts first by name but is the newest: it is the one verified (and it is broken)."""
    store = _local_store(tmp_path, {"b.dump": other_tool_dump, "a.dump": b"garbage"},
                         {"b.dump": timedelta(hours=5), "a.dump": timedelta(hours=1)})
    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")
    assert code == 2 and f"file://{store}/a.dump" in found["archive"]["message"]


def test_no_backup_at_all_is_critical(pg, db_password, prefect_harness, tmp_path, capsys):
    store = _local_store(tmp_path, {"README.txt": b"backups go here"})
    code, found = _verify(capsys, tmp_path, pg, f"file://{store}/")
    assert code == 2 and set(found) == {"presence"}
    assert "no backup at all" in found["presence"]["message"]


def test_missing_bucket_is_one_critical_finding(pg, db_password, prefect_harness, tmp_path, capsys, gcs_emulator):
    code, found = _verify(capsys, tmp_path, pg, "gs://no-such-bucket-0815/db/")
    assert code == 2 and list(found) == ["presence"]
    assert "gs://no-such-bucket-0815" in found["presence"]["message"]


def test_missing_prefix_is_no_backup(pg, db_password, prefect_harness, tmp_path, capsys, gcs_bucket):
    code, found = _verify(capsys, tmp_path, pg, f"gs://{gcs_bucket.name}/never-written/")
    assert code == 2 and "no backup at all" in found["presence"]["message"]


@pytest.mark.parametrize("status", [503, 0], ids=["http-503", "connection-reset"])
def test_transient_faults_during_the_read_leave_the_verdict_unchanged(pg, db_password, prefect_harness, tmp_path,
                                                                      capsys, good_backup, gcs_bucket, gcs_emulator,
                                                                      monkeypatch, status):
    data, manifest, name = good_backup
    gcs_bucket.blob(f"db/{name}").upload_from_string(data)
    gcs_bucket.blob(f"db/{name}.manifest.json").upload_from_string(_manifest_bytes(manifest))
    with FlakyProxy(gcs_emulator, {("GET", "download"): 2, ("GET", "list"): 1}, status=status) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        code, found = _verify(capsys, tmp_path, pg, f"gs://{gcs_bucket.name}/db/")
    assert len([s for s in proxy.seen if s[2]]) == 3, proxy.seen
    assert code == 0, found


def test_every_store_is_checked(pg, db_password, prefect_harness, tmp_path, capsys, other_tool_dump):
    (tmp_path / "one").mkdir()
    good = _local_store(tmp_path / "one", {"nightly.dump": other_tool_dump})
    empty = tmp_path / "two"
    empty.mkdir()
    cfg = write_config(tmp_path / "maint.toml", pg, f"file://{good}/", more_stores=f"""
[[backup_stores]]
name = "second"
url = "file://{empty}/"
database = "prod"
""")
    code, report = run_json(capsys, cfg, "backup-verification")
    subjects = {(f["check"], f["subject"]): f["severity"] for f in report["findings"]}
    assert subjects[("archive", f"file://{good}/")] == "ok"
    assert subjects[("presence", f"file://{empty}/")] == "critical"
    assert code == 2


# --- the archive reader with archives larger than its pipe ------------------------------------------

@pytest.fixture(scope="module")
def large_dump(pg) -> bytes:
    """An uncompressed custom-format dump of several MiB: many times the reader's pipe."""
    pg.create_database("bulky")
    with pg.connect("bulky") as conn:
        conn.execute("CREATE TABLE blob AS SELECT g, md5(g::text) || md5((g * 7)::text) AS payload "
                     "FROM generate_series(1, 120000) g")
    return subprocess.run(["pg_dump", "-Fc", "-Z0", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser, "bulky"],
                          check=True, capture_output=True, env={**os.environ, "PGPASSWORD": pg.password}).stdout


def _feed_in_chunks(data: bytes, chunk: int = 1024 * 1024) -> tuple[bool, str]:
    from maint.tasks.postgres import ArchiveReader

    reader = ArchiveReader()
    assert len(data) > 4 * reader._pipe_bytes, "the archive must be larger than the pipe for this test"
    for start in range(0, len(data), chunk):
        reader.feed(data[start:start + chunk])
    return reader.finish()


def test_archive_reader_reads_a_large_archive_through_its_pipe(large_dump):
    assert _feed_in_chunks(large_dump) == (True, "")


def test_archive_reader_reports_a_large_archive_truncated_in_the_middle(large_dump):
    ok, detail = _feed_in_chunks(large_dump[:len(large_dump) // 2])
    assert not ok and "pg_restore" in detail


def test_archive_reader_does_not_wait_on_pg_restore_that_gave_up():
    """pg_restore rejects the header at once; the rest of a large feed must not wait for room
    in a pipe nobody reads."""
    started = time.monotonic()
    ok, detail = _feed_in_chunks(b"PGDMP" + b"\x00" * (8 * 1024 * 1024))
    assert not ok and "pg_restore failed" in detail
    assert time.monotonic() - started < 10
