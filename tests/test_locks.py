"""Locks: one run of a duty per target however it was started. The key, the label, the lock record
and the findings as plain values; advisory locks against a real PostgreSQL (refused naming the
holder, a bounded wait, a killed holder); lock objects in a local directory (exclusive among
racing threads, a dead run's taken over) and on the GCS emulator; every locking duty run twice
through `maint run`, once while the test holds its lock and once after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from maint.backups import backup_kind, group_backups
from maint.locks import (LABEL_MAX_BYTES, LockHolder, LockRecord, advisory_lock_ids, held_finding, holder_label,
                         lock_key, refused_finding, store_lock_name, unavailable_finding)
from maint.report import Severity
from maint.tasks.storage.base import StoredObject
from tests.conftest import DB_PASSWORD_ENV, Poller, run_cli, run_json, wait_for, write_config

NOW = datetime(2026, 12, 3, 1, 0, tzinfo=timezone.utc)
TTL = timedelta(hours=12)


# --- decisions -----------------------------------------------------------------------------------

def test_the_key_is_a_stable_signed_64_bit_integer_per_duty_and_target():
    # The same in every process and on every host (Python's hash() of a str is salted per process).
    assert lock_key("backup", "shop") == -4558418871185487368
    keys = {lock_key(duty, target) for duty in ("backup", "vacuum") for target in ("shop", "shop2")}
    assert len(keys) == 4 and all(-2**63 <= key < 2**63 for key in keys)
    script = "from maint.locks import lock_key; print(lock_key('backup', 'shop'))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert int(out) == lock_key("backup", "shop")


@pytest.mark.parametrize("key, ids", [
    (0, (0, 0)), (1, (0, 1)), (1 << 32, (1, 0)), (-1, (0xFFFF_FFFF, 0xFFFF_FFFF)), (-(1 << 63), (0x8000_0000, 0)),
    (2**63 - 1, (0x7FFF_FFFF, 0xFFFF_FFFF)),
])
def test_pg_locks_shows_the_key_as_its_high_and_low_32_bits(key, ids):
    assert advisory_lock_ids(key) == ids


@pytest.mark.parametrize("run_id, host, expected", [
    ("1f0c3a9e-0d4b-4c5e-9a7f-1234567890ab", "db-runner-1", "maint backup run 1f0c3a9e db-runner-1 pid 4242"),
    (None, "laptop", "maint backup run cli laptop pid 4242"),
    (None, "höst", "maint backup run cli h?st pid 4242"),  # application_name keeps printable ASCII only
    ("1f0c3a9e", "a" * 80, "maint backup run 1f0c3a9e " + "a" * 28 + " pid 4242"),
])
def test_the_holder_label_fits_application_name(run_id, host, expected):
    label = holder_label("backup", run_id, host, 4242)
    assert label == expected and len(label.encode()) <= LABEL_MAX_BYTES


def test_the_longest_duty_with_a_long_host_keeps_its_run_and_pid():
    label = holder_label("backup-retention", "1f0c3a9e-0d4b", "worker-" + "x" * 60, 4194304)
    assert len(label.encode()) == LABEL_MAX_BYTES
    assert label.startswith("maint backup-retention run 1f0c3a9e worker-") and label.endswith(" pid 4194304")


def test_the_store_lock_object_is_never_taken_for_a_backup():
    name = store_lock_name("backup-retention")
    assert name.startswith(".") and backup_kind(name) is None
    objects = [StoredObject(name, f"gs://b/db/{name}", 90, NOW),
               StoredObject("prod-1.dump", "gs://b/db/prod-1.dump", 10, NOW)]
    assert [e.name for e in group_backups(objects)] == ["prod-1.dump"]


def test_the_lock_record_round_trips_and_goes_stale_at_its_expiry():
    record = LockRecord.new("maint backup-retention run cli h pid 1", NOW, TTL)
    assert json.loads(record.to_json()) == {"holder": "maint backup-retention run cli h pid 1",
                                            "acquired_at": "2026-12-03T01:00:00+00:00",
                                            "expires_at": "2026-12-03T13:00:00+00:00"}
    assert LockRecord.from_object(record.to_json(), NOW, TTL) == record
    assert not record.is_stale(NOW + TTL - timedelta(seconds=1))
    assert record.is_stale(NOW + TTL)


NAIVE = b'{"holder": "x", "acquired_at": "2026-12-03T01:00:00", "expires_at": "2026-12-03T02:00:00"}'


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'{"holder": "x"}', NAIVE])
def test_an_unreadable_lock_object_counts_from_its_creation_for_this_runs_ttl(data):
    record = LockRecord.from_object(data, NOW, TTL)
    assert record.holder.startswith("unknown") and record.acquired_at == NOW
    assert not record.is_stale(NOW + TTL - timedelta(seconds=1)) and record.is_stale(NOW + TTL)


def test_a_refused_run_names_the_session_holding_the_lock_and_how_to_end_it():
    holder = LockHolder("maint backup run 1f0c3a9e db-runner-1 pid 4242", NOW - timedelta(minutes=3),
                        "10.0.0.5", 31337)
    finding = refused_finding("backup", "db:5432/shop", holder, timedelta(0), NOW)
    assert finding.check == "lock" and finding.subject == "db:5432/shop" and finding.severity is Severity.WARNING
    assert finding.message == (
        "another backup run holds the lock on db:5432/shop: 'maint backup run 1f0c3a9e db-runner-1 pid 4242' from "
        "10.0.0.5 (backend pid 31337), since 2026-12-03 00:57:00Z (3m ago); this run waited 0ms ([locks] wait) "
        "and did nothing")
    assert "[locks] wait" in finding.hint and "pg_terminate_backend(31337)" in finding.hint


def test_a_refused_run_names_the_lock_object_and_when_it_expires():
    record = LockRecord.new("maint backup-retention run cli h pid 7", NOW - timedelta(hours=1), TTL)
    holder = LockHolder.of_record(record, "file:///b/.maint-backup-retention.lock")
    finding = refused_finding("backup-retention", "file:///b/", holder, timedelta(seconds=90), NOW)
    assert "'maint backup-retention run cli h pid 7', since 2026-12-03 00:00:00Z (1h ago)" in finding.message
    assert "waited 1m30s" in finding.message
    assert "after 2026-12-03 12:00:00Z" in finding.hint and "file:///b/.maint-backup-retention.lock" in finding.hint


def test_a_holder_gone_before_it_could_be_named():
    finding = refused_finding("vacuum", "db:5432/shop", None, timedelta(0), NOW)
    assert finding.severity is Severity.WARNING and "ended before it could be named" in finding.message


@pytest.mark.parametrize("ending, severity, words", [
    ({}, Severity.OK, "held the vacuum lock on db:5432/shop for 4.2s, then released it"),
    ({"lost": True}, Severity.WARNING, "but lost it before the end"),
    ({"taken_over": LockHolder("maint vacuum run cli old pid 1", NOW - timedelta(hours=13),
                               expires_at=NOW - timedelta(hours=1))},
     Severity.WARNING, "took the lock over from 'maint vacuum run cli old pid 1', since 2026-12-02 12:00:00Z "
                       "(13h ago), whose lock had expired at 2026-12-03 00:00:00Z"),
    ({"release_error": "gs://b/db/.maint-vacuum.lock: transient error"}, Severity.WARNING,
     "but could not release it: gs://b/db/.maint-vacuum.lock: transient error"),
])
def test_a_held_lock_ends_as_one_finding(ending, severity, words):
    finding = held_finding("vacuum", "db:5432/shop", timedelta(seconds=4.2), NOW, **ending)
    assert finding.check == "lock" and finding.severity is severity and words in finding.message


def test_a_lock_that_cannot_be_asked_for_is_critical_and_nothing_was_done():
    finding = unavailable_finding("db:5432/shop", "cannot connect to database 'prod': connection refused")
    assert finding.severity is Severity.CRITICAL and finding.check == "lock"
    assert finding.message == ("could not take the lock, so nothing was done here: cannot connect to database "
                               "'prod': connection refused")


# --- advisory locks against PostgreSQL -----------------------------------------------------------

@pytest.fixture
def shop_db(pg, db_password):
    from maint.config import DatabaseConfig

    return DatabaseConfig(name="prod", host=pg.host, port=pg.port, dbname="shop", user=pg.superuser,
                          password_env=DB_PASSWORD_ENV, sslmode="disable")


def _key() -> int:
    return lock_key("test", uuid.uuid4().hex)  # the session's server is shared: a key of the test's own


def _sessions(pg, label: str) -> list[int]:
    with pg.connect() as conn:
        return [pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                               (label,))]


def test_a_second_run_is_refused_naming_the_holder(pg, shop_db):
    from maint.tasks.postgres import AdvisoryLock

    key = _key()
    first, second = AdvisoryLock(shop_db, key, "maint test first"), AdvisoryLock(shop_db, key, "maint test second")
    assert first.acquire(timedelta(0))
    try:
        assert not second.acquire(timedelta(0))
        [pid] = _sessions(pg, "maint test first")
        holder = second.holder
        assert (holder.label, holder.backend_pid, holder.address) == ("maint test first", pid, "127.0.0.1")
        assert timedelta(0) <= datetime.now(timezone.utc) - holder.since < timedelta(minutes=1)
        wait_for(lambda: not _sessions(pg, "maint test second"), what="the refused run's connection to close")
        other = AdvisoryLock(shop_db, _key(), "maint test other")
        assert other.acquire(timedelta(0)), "another key is another lock"
        assert other.release()
    finally:
        assert first.release()
    assert second.acquire(timedelta(0)), "released, it is free"
    assert second.release()
    assert not second.release(), "nothing is held any more"


def test_a_bounded_wait_gets_the_lock_when_the_holder_releases_it(pg, shop_db):
    from maint.tasks.postgres import AdvisoryLock

    key = _key()
    holder = AdvisoryLock(shop_db, key, "maint test holder")
    assert holder.acquire(timedelta(0))
    started = time.monotonic()
    assert not AdvisoryLock(shop_db, key, "maint test impatient").acquire(timedelta(milliseconds=300))
    assert time.monotonic() - started >= 0.3, "it waited the whole wait"
    # Released once the waiter is seen polling: the waiter must get it within its wait.
    release = Poller(lambda: _sessions(pg, "maint test waiter"), holder.release)
    release.start()
    waiter = AdvisoryLock(shop_db, key, "maint test waiter")
    started = time.monotonic()
    try:
        assert waiter.acquire(timedelta(seconds=30))
        assert release.fired.is_set() and time.monotonic() - started < 30
    finally:
        release.stop.set()
        waiter.release()


_HOLD = """
import json, sys
from datetime import timedelta
from maint.config import DatabaseConfig
from maint.tasks.postgres import AdvisoryLock

db = DatabaseConfig(**json.loads(sys.argv[1]))
lock = AdvisoryLock(db, int(sys.argv[2]), sys.argv[3])
assert lock.acquire(timedelta(0))
print("held", flush=True)
sys.stdin.read()
"""


def test_a_killed_holder_takes_its_lock_with_it(pg, shop_db):
    from maint.tasks.postgres import AdvisoryLock

    key = _key()
    settings = json.dumps(shop_db.model_dump(exclude={"connect_timeout"}))
    process = subprocess.Popen([sys.executable, "-c", _HOLD, settings, str(key), "maint test doomed"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        refused = AdvisoryLock(shop_db, key, "maint test next")
        assert not refused.acquire(timedelta(0)) and refused.holder.label == "maint test doomed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
    taken: list[AdvisoryLock] = []

    def free() -> bool:
        lock = AdvisoryLock(shop_db, key, "maint test next")
        if lock.acquire(timedelta(0)):
            taken.append(lock)
        return bool(taken)

    wait_for(free, what="the killed holder's session to end and its lock to go with it")
    assert taken[0].release()


def test_a_lock_whose_session_was_ended_is_lost(pg, shop_db):
    from maint.tasks.postgres import AdvisoryLock

    lock = AdvisoryLock(shop_db, _key(), "maint test victim")
    assert lock.acquire(timedelta(0))
    with pg.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                     ("maint test victim",))
    wait_for(lambda: not _sessions(pg, "maint test victim"), what="the terminated session to end")
    assert not lock.release()


# --- lock objects in a store ---------------------------------------------------------------------

NAME = store_lock_name("backup-retention")


@pytest.fixture
def local_store(tmp_path):
    from maint.tasks.storage.local import LocalStore

    root = tmp_path / "store"
    root.mkdir()
    return LocalStore(f"file://{root}/")


def _store_lock(store, label: str):
    from maint.tasks.storage import StoreLock

    return StoreLock(store, NAME, label, TTL)


def test_of_racing_runs_exactly_one_gets_the_local_lock(local_store):
    locks = [_store_lock(local_store, f"maint test racer {i}") for i in range(8)]
    start = threading.Barrier(len(locks))
    results: dict[int, bool] = {}

    def race(i: int) -> None:
        start.wait()
        results[i] = locks[i].acquire(timedelta(0))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(locks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [i for i, won in results.items() if won]
    assert {locks[i].holder.label for i in results if i != winner} == {f"maint test racer {winner}"}
    record = json.loads((local_store.root / NAME).read_bytes())
    assert record["holder"] == f"maint test racer {winner}"
    assert [p.name for p in local_store.root.iterdir()] == [NAME], "no partial file is left behind"
    assert local_store.list_objects() == [], "listing never shows the lock"
    assert locks[winner].release()
    assert list(local_store.root.iterdir()) == []
    assert _store_lock(local_store, "maint test next").acquire(timedelta(0))


def _plant(store, holder: str, acquired_at: datetime) -> bytes:
    data = LockRecord.new(holder, acquired_at, TTL).to_json()
    (store.root / NAME).write_bytes(data)
    return data


def test_a_dead_runs_local_lock_is_taken_over_and_a_live_ones_is_not(local_store):
    now = datetime.now(timezone.utc)
    _plant(local_store, "maint test alive", now - timedelta(hours=11))
    refused = _store_lock(local_store, "maint test next")
    assert not refused.acquire(timedelta(0))
    assert refused.holder.label == "maint test alive" and refused.holder.lock_url == local_store.url + NAME
    assert refused.taken_over is None

    _plant(local_store, "maint test dead", now - timedelta(hours=13))
    lock = _store_lock(local_store, "maint test next")
    assert lock.acquire(timedelta(0))
    assert lock.taken_over.label == "maint test dead" and lock.taken_over.expires_at < now
    assert json.loads((local_store.root / NAME).read_bytes())["holder"] == "maint test next"
    assert lock.release() and not (local_store.root / NAME).exists()


def test_an_unreadable_local_lock_is_taken_over_only_once_older_than_the_ttl(local_store):
    path = local_store.root / NAME
    path.write_bytes(b"garbage")
    assert not _store_lock(local_store, "maint test next").acquire(timedelta(0))
    old = time.time() - TTL.total_seconds() - 60
    os.utime(path, (old, old))
    lock = _store_lock(local_store, "maint test next")
    assert lock.acquire(timedelta(0)) and lock.taken_over.label.startswith("unknown")
    assert lock.release()


def test_a_local_lock_replaced_meanwhile_is_lost_and_the_new_one_stays(local_store):
    lock = _store_lock(local_store, "maint test slow")
    assert lock.acquire(timedelta(0))
    theirs = _plant(local_store, "maint test took it over", datetime.now(timezone.utc))
    assert not lock.release()
    assert (local_store.root / NAME).read_bytes() == theirs
    assert [p.name for p in local_store.root.iterdir()] == [NAME]


def test_a_local_store_lock_waits_and_then_gets_it(local_store):
    holder = _store_lock(local_store, "maint test holder")
    assert holder.acquire(timedelta(0))
    waiter = _store_lock(local_store, "maint test waiter")
    release = Poller(lambda: waiter.holder is not None, holder.release)  # once the waiter has seen it held
    release.start()
    try:
        assert waiter.acquire(timedelta(seconds=30)) and release.fired.is_set()
    finally:
        release.stop.set()
    assert waiter.release()


def test_a_missing_local_directory_is_an_error_not_a_lock(tmp_path):
    from maint.errors import StorageError
    from maint.tasks.storage.local import LocalStore

    missing = tmp_path / "not-mounted"
    with pytest.raises(StorageError, match="does not exist"):
        _store_lock(LocalStore(f"file://{missing}/"), "maint test").acquire(timedelta(0))
    assert not missing.exists()


def test_gcs_lock_round_trip(gcs_bucket):
    """The emulator ignores ifGenerationMatch, on creation and deletion alike: exclusivity on GCS
    (and the takeover, which an unconditional create would skip) rests on GCS itself, and is shown
    for the local store above. This shows the object, how it is read and how it is released."""
    from maint.tasks.storage.gcs import GcsStore

    store = GcsStore(f"gs://{gcs_bucket.name}/db/")
    lock = _store_lock(store, "maint test gcs")
    assert lock.acquire(timedelta(0))
    blob = gcs_bucket.get_blob(f"db/{NAME}")
    assert json.loads(blob.download_as_bytes())["holder"] == "maint test gcs"
    assert [o.name for o in store.list_objects()] == [NAME] and group_backups(store.list_objects()) == []
    assert lock.release() and gcs_bucket.get_blob(f"db/{NAME}") is None
    assert not lock.release()

    dead = LockRecord.new("maint test dead", datetime.now(timezone.utc) - timedelta(hours=13), TTL).to_json()
    gcs_bucket.blob(f"db/{NAME}").upload_from_string(dead)
    found = store.read_lock(NAME)
    assert (found.data, found.generation) == (dead, gcs_bucket.get_blob(f"db/{NAME}").generation)
    assert LockRecord.from_object(found.data, found.created_at, TTL).is_stale(datetime.now(timezone.utc))
    assert store.delete_lock(found) and store.read_lock(NAME) is None
    assert not store.delete_lock(found), "already gone"


# --- the duties ----------------------------------------------------------------------------------

def _lock_findings(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == "lock"]


def _refused(report: dict, holder: str, subject: str) -> None:
    [finding] = _lock_findings(report)
    assert finding["severity"] == "warning" and finding["subject"] == subject
    assert f"holds the lock on {subject}: '{holder}'" in finding["message"], finding


def _held(report: dict, duty: str, subject: str) -> None:
    [finding] = _lock_findings(report)
    assert finding["severity"] == "ok" and f"held the {duty} lock on {subject}" in finding["message"], finding


def _run_while_held(capsys, lock, config: Path, duty: str, *flags: str) -> tuple[int, dict]:
    """`maint run DUTY --json` while the test holds the duty's lock."""
    assert lock.acquire(timedelta(0))
    try:
        code, out, err = run_cli(capsys, "--config", str(config), "run", duty, "--json", *flags)
    finally:
        assert lock.release()
    assert out.strip(), err
    return code, json.loads(out)


def _database(config: Path, name: str = "prod"):
    from maint.tasks.environment import load_config

    return load_config(config).database(name)


def _analyze_count(pg, dbname: str) -> int:
    with pg.connect(dbname) as conn:
        return conn.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'never_analyzed'"
                            ).fetchone()[0]


def test_vacuum_waits_for_no_other_vacuum_of_the_database(pg, db_password, prefect_harness, tmp_path, capsys):
    from maint.tasks.postgres import AdvisoryLock

    dbname = f"locks_{uuid.uuid4().hex[:8]}"
    pg.create_database(dbname)
    with pg.connect(dbname, autocommit=True) as conn:
        conn.execute("CREATE TABLE never_analyzed (id int) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO never_analyzed SELECT generate_series(1, 100)")
    config = write_config(tmp_path / "maint.toml", pg, f"file://{tmp_path}/", dbname=dbname,
                          extra='[vacuum]\ndatabases = ["prod"]\n')
    db = _database(config)
    holder = AdvisoryLock(db, lock_key("vacuum", dbname), "maint test vacuum holder")
    code, report = _run_while_held(capsys, holder, config, "vacuum")
    assert code == 1
    _refused(report, "maint test vacuum holder", db.address)
    assert not [f for f in report["findings"] if f["check"] in ("vacuum", "analyze")]
    assert _analyze_count(pg, dbname) == 0, "the held database was left alone"

    code, report = run_json(capsys, config, "vacuum")
    assert code == 0, report["findings"]
    _held(report, "vacuum", db.address)
    wait_for(lambda: _analyze_count(pg, dbname) == 1, what=f"never_analyzed in {dbname} to have been analyzed")


def test_backup_waits_for_no_other_backup_of_the_database(pg, db_password, prefect_harness, tmp_path, capsys):
    from maint.tasks.postgres import AdvisoryLock

    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/")
    db = _database(config)
    holder = AdvisoryLock(db, lock_key("backup", "shop"), "maint test backup holder")
    code, report = _run_while_held(capsys, holder, config, "backup")
    assert code == 1
    _refused(report, "maint test backup holder", db.address)
    assert list(store.iterdir()) == [], "nothing was dumped"

    code, report = run_json(capsys, config, "backup")
    assert code == 0, report["findings"]
    _held(report, "backup", db.address)
    assert len(list(store.glob("*.dump"))) == 1


def test_retention_applies_only_while_no_other_run_holds_the_store(pg, db_password, prefect_harness, tmp_path,
                                                                   capsys):
    from maint.tasks.storage import StoreLock
    from maint.tasks.storage.local import LocalStore
    from tests.test_retention import _local_backups, _retention_config

    store = tmp_path / "store"
    store.mkdir()
    _local_backups(store, 5)
    url = f"file://{store}/"
    config = _retention_config(tmp_path, pg, url)
    holder = StoreLock(LocalStore(url), NAME, "maint test retention holder", TTL)
    code, report = _run_while_held(capsys, holder, config, "backup-retention", "--apply")
    assert code == 1
    _refused(report, "maint test retention holder", url)
    assert len(list(store.iterdir())) == 10, "nothing was deleted"

    code, report = _run_while_held(capsys, holder, config, "backup-retention")
    assert code == 0 and not _lock_findings(report), "a dry run changes nothing and takes no lock"

    code, out, _ = run_cli(capsys, "--config", str(config), "run", "backup-retention", "--apply", "--json")
    report = json.loads(out)
    assert code == 0, report["findings"]
    _held(report, "backup-retention", url)
    assert len(list(store.iterdir())) == 4, "deleted 3 backups, left no lock object"


@pytest.mark.parametrize("duty, section", [("restore-test", "restore_test"), ("dr-drill", "dr_drill")])
def test_a_restore_waits_for_no_other_of_the_same_store(pg, db_password, prefect_harness, tmp_path, capsys, duty,
                                                        section):
    from maint.tasks.postgres import AdvisoryLock

    store = tmp_path / "store"
    store.mkdir()
    url = f"file://{store}/"
    config = write_config(tmp_path / "maint.toml", pg, url,
                          extra=f'[{section}]\nstore = "prod-dumps"\nserver = "prod"\n')
    holder = AdvisoryLock(_database(config), lock_key(duty, url), f"maint test {duty} holder")
    code, report = _run_while_held(capsys, holder, config, duty)
    assert code == 1
    _refused(report, f"maint test {duty} holder", url)
    assert [f["check"] for f in report["findings"]] == ["lock"], "nothing else was done"

    code, report = run_json(capsys, config, duty)
    assert code == 2, "an empty store: nothing to restore"
    _held(report, duty, url)
