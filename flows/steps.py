"""Steps that several duties run, as Prefect tasks: listing a store's backups, reading one back
in a single streamed pass, restoring one into a scratch database and validating it, and holding
the lock that keeps a second run of a duty off the same target.

Verification, retention, the restore test and the DR drill all read the store the same way, and
the restore test and the DR drill restore the same way; every duty that changes something locks
the same way; the steps live here so that no duty's module imports another's.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from prefect import task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.backups import KIND_CUSTOM, KIND_SQL_GZ, BackupEntry, Manifest, ManifestError, group_backups
from maint.config import BackupStoreConfig, DatabaseConfig, LocksConfig, MaintConfig, SqlCheckConfig
from maint.digests import Digests
from maint.durations import format_bytes
from maint.errors import ChecksumMismatch, MaintError
from maint.flows._duty import is_transient, utcnow
from maint.health import assess_sql_check
from maint.locks import held_finding, holder_label, lock_key, refused_finding, store_lock_name, unavailable_finding
from maint.report import Finding, Report, Severity
from maint.restore import scratch_name, toc_tables, validate_row_counts, validate_tables_present
from maint.tasks import postgres
from maint.tasks.storage import StoreLock, open_store
from maint.verification import GzipSqlReader, IntegrityResult, PlainSqlReader

log = logging.getLogger("maint.steps")
_VERIFY_PROGRESS_EVERY_BYTES = 512 * 1024 * 1024


# --- a store's backups ---------------------------------------------------------------------------

def _manifests_to_read(store: BackupStoreConfig) -> int:
    """Manifests of the newest backups by object time: enough to rank them by snapshot time and
    to compare the newest one's size with its predecessors'."""
    return store.size_window + 3


@task(name="list-backups", retries=3, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def list_backups(store_config: BackupStoreConfig) -> list[BackupEntry]:
    store = open_store(store_config)
    entries = group_backups(store.list_objects())
    recent = entries[-_manifests_to_read(store_config):]

    def with_manifest(entry: BackupEntry) -> BackupEntry:
        if entry.manifest_name is None:
            return entry
        try:
            return replace(entry, manifest=Manifest.from_json(store.read_bytes(entry.manifest_name)))
        except ManifestError as exc:
            return replace(entry, manifest_problem=str(exc))

    with ThreadPoolExecutor(max_workers=8) as pool:
        recent = list(pool.map(with_manifest, recent))
    return entries[:-len(recent) or None] + recent if recent else entries


@task(name="read-backup-in-one-pass", retries=2, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def read_backup_in_one_pass(store_config: BackupStoreConfig, entry: BackupEntry) -> IntegrityResult:
    """Read the backup once; hash it and hand every chunk to the archive reader as it arrives.

    Only the digests there is something to compare with are computed. Memory is flat in the
    backup's size: one chunk in flight, plus pg_restore's own."""
    store = open_store(store_config)
    # A store whose listing carries no checksum values (S3) is asked for this one version's.
    store_crc32c = None if entry.crc32c else store.stored_crc32c(entry.name, entry.generation)
    digests = Digests(sha256=entry.manifest is not None, crc32c=bool(entry.manifest or entry.crc32c or store_crc32c),
                      md5=bool(entry.md5 and not (entry.crc32c or store_crc32c)))
    if entry.kind == KIND_CUSTOM:
        reader = postgres.ArchiveReader()
    elif entry.kind == KIND_SQL_GZ:
        reader = GzipSqlReader()
    else:
        reader = PlainSqlReader()
    next_report, clock = _VERIFY_PROGRESS_EVERY_BYTES, time.monotonic()
    try:
        for chunk in store.open_reader(entry.name, generation=entry.generation):
            digests.update(chunk)
            reader.feed(chunk)
            if digests.size_bytes >= next_report:
                log.info("verified %s of %s (%s) so far", format_bytes(digests.size_bytes),
                         format_bytes(entry.size_bytes), entry.url)
                next_report += _VERIFY_PROGRESS_EVERY_BYTES
        ok, detail = reader.finish()
    except BaseException:
        if isinstance(reader, postgres.ArchiveReader):
            reader.kill()
        raise
    log.info("read %s (%s) in %.1fs", entry.url, format_bytes(digests.size_bytes), time.monotonic() - clock)
    return IntegrityResult(bytes_read=digests.size_bytes, sha256=digests.sha256, crc32c=digests.crc32c,
                           md5=digests.md5, store_crc32c=store_crc32c, archive_ok=ok, archive_detail=detail,
                           checker=reader.checker)


def read_failure_finding(store_url: str, entry: BackupEntry, exc: MaintError) -> Finding:
    """Why a backup could not be read back in one pass. Bytes that do not match the checksum the
    store holds are corruption, the same finding as a digest that differs from the manifest's;
    anything else is the archive that could not be read."""
    if isinstance(exc, ChecksumMismatch):
        return Finding("checksum", store_url, Severity.CRITICAL, str(exc),
                       "the backup is corrupt (bit rot, or changed after it was written): do not restore it; "
                       "take a new backup and check the storage")
    return Finding("archive", store_url, Severity.CRITICAL, f"{entry.url}: {exc}",
                   "the backup could not be read back; retry, and check the store's health")


# --- restoring into a scratch database -----------------------------------------------------------

@dataclass(frozen=True)
class ScratchRules:
    """Where and how a backup may be restored: only into names maint generates with `prefix`,
    never over a configured database, with `jobs` pg_restore workers."""

    prefix: str
    protected: frozenset[str]  # every configured database's dbname: never created or dropped
    jobs: int
    owners: bool = False  # restore the dump's owners and GRANTs ([restore_test].restore_owners)

    @classmethod
    def of(cls, config: MaintConfig) -> "ScratchRules":
        return cls(config.scratch.scratch_prefix, frozenset(d.dbname for d in config.databases),
                   config.scratch.jobs, config.scratch.restore_owners)


@dataclass
class RestoreResult:
    """What restoring one backup showed, phase by phase; the restore test and the DR drill read it.
    A phase that failed with a MaintError ends it: `failure` says why, and the scratch database
    was dropped all the same."""

    findings: list[Finding] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)  # (when, what) at each phase's end
    seconds: dict[str, float] = field(default_factory=dict)  # download, restore, validation, total
    validated_at: datetime | None = None
    failure: MaintError | None = None

    @property
    def report_seconds(self) -> dict[str, float]:
        return {f"{phase}_seconds": round(value, 3) for phase, value in self.seconds.items()}


@task(name="fetch-backup", retries=2, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def fetch_backup(store_config: BackupStoreConfig, entry: BackupEntry, workdir: str) -> str:
    """A seekable local file of the backup: pg_restore --jobs needs one."""
    store = open_store(store_config)
    local = store.local_path(entry.name)
    if local is not None:
        return str(local)
    target = Path(workdir) / entry.name
    with open(target, "wb") as f:
        for chunk in store.open_reader(entry.name, generation=entry.generation):
            f.write(chunk)
    return str(target)


@task(name="create-scratch-database", cache_policy=NO_CACHE)
def create_scratch(server: DatabaseConfig, name: str, rules: ScratchRules) -> None:
    postgres.create_scratch_database(server, name, prefix=rules.prefix, protected=set(rules.protected))


@task(name="restore-into-scratch", cache_policy=NO_CACHE)
def restore_into_scratch(server: DatabaseConfig, name: str, path: str, rules: ScratchRules) -> None:
    postgres.restore_archive(server, name, path, jobs=rules.jobs, owners=rules.owners)


@task(name="validate-restore", cache_policy=NO_CACHE)
def validate_restore(server: DatabaseConfig, name: str, entry: BackupEntry, path: str, subject: str) -> list[Finding]:
    found = postgres.count_rows(server, name)
    if entry.manifest is not None:
        return validate_row_counts(subject, entry.manifest.tables, found)
    restored = set(found)
    return validate_tables_present(subject, toc_tables(postgres.archive_listing(path), restored), restored)


@task(name="run-sql-check-on-scratch", cache_policy=NO_CACHE)
def run_sql_check_on_scratch(server: DatabaseConfig, name: str, check: SqlCheckConfig) -> Finding:
    scratch = server.model_copy(update={"dbname": name})
    return assess_sql_check(check.name, name, check.severity, postgres.run_sql_check(scratch, check.sql, check.timeout))


@task(name="drop-scratch-database", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def drop_scratch(server: DatabaseConfig, name: str, rules: ScratchRules) -> None:
    postgres.drop_scratch_database(server, name, prefix=rules.prefix, protected=set(rules.protected))


class _Progress:
    """A Prefect progress artifact, a log line and a timeline entry per phase."""

    def __init__(self, phases: int, timeline: list[tuple[datetime, str]]):
        self.phases, self.done, self.timeline = phases, 0, timeline
        self.artifact_id = create_progress_artifact(progress=0.0, key="restore-progress",
                                                    description="restore: phases done")

    def phase(self, text: str) -> None:
        self.done += 1
        log.info("restore %d/%d: %s", self.done, self.phases, text)
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0 * self.done / self.phases)
        self.timeline.append((utcnow(), text))


def restore_and_validate(store_config: BackupStoreConfig, server: DatabaseConfig, entry: BackupEntry,
                         rules: ScratchRules, sql_checks: list[SqlCheckConfig], now: datetime) -> RestoreResult:
    """Fetch, create the scratch database (named for `now`), restore, validate, run the SQL
    checks, and always drop it again."""
    result = RestoreResult()
    progress = _Progress(phases=5, timeline=result.timeline)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="maint-restore-") as workdir:
            clock = time.monotonic()
            path = fetch_backup(store_config, entry, workdir)
            result.seconds["download"] = time.monotonic() - clock
            progress.phase(f"fetched {entry.url} ({format_bytes(entry.size_bytes)}) "
                           f"in {result.seconds['download']:.1f}s")
            name = scratch_name(rules.prefix, now)
            create_scratch(server, name, rules)
            progress.phase(f"created scratch database {name} on {server.address.rsplit('/', 1)[0]}")
            try:
                clock = time.monotonic()
                restore_into_scratch(server, name, path, rules)
                result.seconds["restore"] = time.monotonic() - clock
                progress.phase(f"restored in {result.seconds['restore']:.1f}s")
                result.findings.append(Finding("restore", store_config.url, Severity.OK,
                                               f"restored {entry.url} into {name} with {rules.jobs} job(s) in "
                                               f"{result.seconds['restore']:.1f}s: the measured RTO of this backup"))
                clock = time.monotonic()
                result.findings += validate_restore(server, name, entry, path, store_config.url)
                for check in sql_checks:
                    result.findings.append(run_sql_check_on_scratch(server, name, check))
                result.seconds["validation"] = time.monotonic() - clock
                result.validated_at = utcnow()
                progress.phase(f"validated in {result.seconds['validation']:.1f}s")
            finally:
                drop_scratch(server, name, rules)
                progress.phase(f"dropped scratch database {name}")
    except MaintError as exc:
        result.failure = exc
        return result
    result.seconds["total"] = time.monotonic() - started
    return result


# --- one run per target --------------------------------------------------------------------------

class DutyLock:
    """A lock a duty takes on what it changes, and how its findings name that (`subject`)."""

    def __init__(self, duty: str, subject: str, lock: postgres.AdvisoryLock | StoreLock):
        self.duty, self.subject, self.lock = duty, subject, lock
        self.held = False
        self.taken = 0.0  # time.monotonic() when taken

    @classmethod
    def in_database(cls, duty: str, db: DatabaseConfig, target: str, subject: str | None = None) -> "DutyLock":
        """An advisory lock in `db`'s database, keyed by (duty, target)."""
        return cls(duty, subject or db.address, postgres.AdvisoryLock(db, lock_key(duty, target), _holder(duty)))

    @classmethod
    def in_store(cls, duty: str, store_config: BackupStoreConfig, locks: LocksConfig) -> "DutyLock":
        """A lock object in the store, for a duty with no database to lock."""
        store = open_store(store_config)
        return cls(duty, store_config.url,
                   StoreLock(store, store_lock_name(duty), _holder(duty), locks.store_lock_ttl))


def _holder(duty: str) -> str:
    from prefect.runtime import flow_run

    return holder_label(duty, str(flow_run.id) if flow_run.id else None, socket.gethostname(), os.getpid())


@task(name="take-lock", retry_delay_seconds=exponential_backoff(1), retry_condition_fn=is_transient,
      cache_policy=NO_CACHE, persist_result=False)
def take_lock(lock: DutyLock, wait_seconds: float) -> bool:
    """Take the lock, waiting up to `wait_seconds` for another run to release it."""
    return lock.lock.acquire(timedelta(seconds=wait_seconds))


@contextmanager
def holding_locks(report: Report, locks: list[DutyLock], settings: LocksConfig, *, retries: int = 2,
                  raise_errors: bool = False) -> Iterator[list[DutyLock]]:
    """Take every lock at once, each waiting up to [locks] wait; yield the ones taken, and release
    them on the way out. A lock another run holds is a warning naming the holder; one that could
    not be asked for is a critical finding (or, with `raise_errors`, the MaintError itself, for
    the duty to report as its own failure). Each lock taken ends as one finding: held and released
    (ok), or taken over from a dead run or lost on the way (warnings)."""
    if not locks:
        yield []
        return
    futures = take_lock.with_options(retries=retries).map(locks, unmapped(settings.wait.total_seconds()))
    failures: list[BaseException] = []
    for lock, future in zip(locks, futures):  # every answer first, so that an error leaves none held
        try:
            lock.held, lock.taken = future.result(), time.monotonic()
        except MaintError as exc:
            if raise_errors:
                failures.append(exc)
            else:
                report.add(unavailable_finding(lock.subject, str(exc)))
        except BaseException as exc:
            failures.append(exc)
        else:
            if not lock.held:
                report.add(refused_finding(lock.duty, lock.subject, lock.lock.holder, settings.wait, utcnow()))
    held = [lock for lock in locks if lock.held]
    try:
        if failures:
            raise failures[0]
        yield held
    finally:
        for lock in held:
            lost, error = False, None
            try:
                lost = not lock.lock.release()
            except MaintError as exc:  # the store failed: the duty itself is done, and says so
                error = str(exc)
            report.add(held_finding(lock.duty, lock.subject, timedelta(seconds=time.monotonic() - lock.taken),
                                    utcnow(), taken_over=lock.lock.taken_over, lost=lost, release_error=error))


@contextmanager
def holding_lock(report: Report, lock: DutyLock | None, settings: LocksConfig, *,
                 retries: int = 2) -> Iterator[bool]:
    """The one lock of a duty: yields whether this run holds it (with None, a run that changes
    nothing, always). A lock that cannot be asked for raises its MaintError."""
    if lock is None:
        yield True
        return
    with holding_locks(report, [lock], settings, retries=retries, raise_errors=True) as held:
        yield bool(held)
