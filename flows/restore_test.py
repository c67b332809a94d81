"""Duty `restore-test`: restore the newest backup into a scratch database, validate it, time it,
and always drop the scratch database.

Runbook:
  1. drop scratch databases that crashed runs left behind (only maint's own names, only old ones),
  2. find the store's newest backup (by real creation time),
  3. fetch it (a local store's file is used in place; a GCS object is downloaded, timed),
  4. create a scratch database named prefix + timestamp, pg_restore into it with `jobs` workers,
  5. validate: every manifest table with exactly its row count (without a manifest: every table of
     the archive's table of contents), then the optional SQL checks,
  6. drop the scratch database, whatever happened in 4 and 5.
The restore time is the measured RTO of this backup.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.flows._duty import finish_duty, is_transient, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.backup_verification import list_backups
from maint.config import BackupStoreConfig, DatabaseConfig, SqlCheckConfig
from maint.durations import format_bytes
from maint.errors import MaintError
from maint.health import assess_sql_check
from maint.report import Finding, Report, Severity
from maint.restore import (leftover_scratch_databases, scratch_name, toc_tables, validate_row_counts,
                           validate_tables_present)
from maint.verification import BackupEntry, newest_first
from maint.tasks import postgres
from maint.tasks.storage import LocalStore, open_store

log = logging.getLogger("maint.restore")


@dataclass(frozen=True)
class ScratchRules:
    prefix: str
    protected: frozenset[str]  # every configured database's dbname: never created or dropped


@task(name="drop-leftover-scratch-databases", cache_policy=NO_CACHE)
def drop_leftovers(server: DatabaseConfig, rules: ScratchRules, older_than_seconds: float) -> list[str]:
    from datetime import timedelta

    leftovers = leftover_scratch_databases(postgres.list_databases(server), rules.prefix, utcnow(),
                                           timedelta(seconds=older_than_seconds))
    for name in leftovers:
        postgres.drop_scratch_database(server, name, prefix=rules.prefix, protected=set(rules.protected))
    return leftovers


@task(name="fetch-backup", retries=2, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def fetch_backup(store_config: BackupStoreConfig, entry: BackupEntry, workdir: str) -> str:
    """A seekable local file of the backup: pg_restore --jobs needs one."""
    store = open_store(store_config)
    if isinstance(store, LocalStore):
        return str(store.local_path(entry.name))
    target = Path(workdir) / entry.name
    with open(target, "wb") as f:
        for chunk in store.open_reader(entry.name, generation=entry.generation):
            f.write(chunk)
    return str(target)


@task(name="create-scratch-database", cache_policy=NO_CACHE)
def create_scratch(server: DatabaseConfig, name: str, rules: ScratchRules) -> None:
    postgres.create_scratch_database(server, name, prefix=rules.prefix, protected=set(rules.protected))


@task(name="restore-into-scratch", cache_policy=NO_CACHE)
def restore_into_scratch(server: DatabaseConfig, name: str, path: str, jobs: int) -> None:
    postgres.restore_archive(server, name, path, jobs=jobs)


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
    """A Prefect progress artifact and a log line per phase."""

    def __init__(self, phases: int, timeline: list | None):
        self.phases, self.done, self.timeline = phases, 0, timeline
        self.artifact_id = create_progress_artifact(progress=0.0, key="restore-progress",
                                                    description="restore: phases done")

    def phase(self, text: str) -> None:
        self.done += 1
        log.info("restore %d/%d: %s", self.done, self.phases, text)
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0 * self.done / self.phases)
        if self.timeline is not None:
            self.timeline.append((utcnow(), text))


def restore_and_validate(report: Report, store_config: BackupStoreConfig,
                         server: DatabaseConfig, entry: BackupEntry, rules: ScratchRules, jobs: int,
                         sql_checks: list[SqlCheckConfig], now, timeline: list | None = None) -> dict[str, float]:
    """Steps 3 to 6, shared with the DR drill: fetch, create, restore, validate, always drop.
    Returns the phase timings in seconds; findings go into `report`; each phase's end goes into
    `timeline` as (time, event) when one is given."""
    progress = _Progress(phases=5, timeline=timeline)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="maint-restore-") as workdir:
        clock = time.monotonic()
        path = fetch_backup(store_config, entry, workdir)
        timings["download_seconds"] = time.monotonic() - clock
        progress.phase(f"fetched {entry.url} ({format_bytes(entry.size_bytes)}) "
                       f"in {timings['download_seconds']:.1f}s")
        name = scratch_name(rules.prefix, now)
        create_scratch(server, name, rules)
        progress.phase(f"created scratch database {name} on {server.address.rsplit('/', 1)[0]}")
        try:
            clock = time.monotonic()
            restore_into_scratch(server, name, path, jobs)
            timings["restore_seconds"] = time.monotonic() - clock
            progress.phase(f"restored in {timings['restore_seconds']:.1f}s")
            report.add(Finding("restore", store_config.url, Severity.OK,
                               f"restored {entry.url} into {name} with {jobs} job(s) in "
                               f"{timings['restore_seconds']:.1f}s: the measured RTO of this backup"))
            clock = time.monotonic()
            for finding in validate_restore(server, name, entry, path, store_config.url):
                report.add(finding)
            for check in sql_checks:
                report.add(run_sql_check_on_scratch(server, name, check))
            timings["validation_seconds"] = time.monotonic() - clock
            timings["validated_at"] = time.time()
            progress.phase(f"validated in {timings['validation_seconds']:.1f}s")
        finally:
            drop_scratch(server, name, rules)
            progress.phase(f"dropped scratch database {name}")
    timings["total_seconds"] = time.monotonic() - started
    return timings


@flow(name="restore-test", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def restore_test(config_path: str | None = None) -> dict:
    """Friday: the newest backup restores, holds what its manifest says, and how long it takes."""
    config = load_duty_config(config_path, "restore-test")
    rt = config.restore_test
    store_config, server = config.store(rt.store), config.database(rt.server)
    rules = ScratchRules(rt.scratch_prefix, frozenset(d.dbname for d in config.databases))
    report = start_report("restore-test")
    now = utcnow()
    try:
        for name in drop_leftovers(server, rules, rt.leftover_age.total_seconds()):
            report.add(Finding("leftovers", server.address, Severity.WARNING,
                               f"dropped scratch database {name}, left behind by a crashed earlier run",
                               "look for a restore-test run that crashed or was killed around that time"))
        entries = list_backups(store_config)
        if not entries:
            report.add(Finding("restore", store_config.url, Severity.CRITICAL, f"no backup in {store_config.url}",
                               "nothing to restore: is the backup job running?"))
            return finish_duty(report, config)
        newest = newest_first(entries)[0]
        timings = restore_and_validate(report, store_config, server, newest, rules, rt.jobs,
                                       rt.sql_checks, now)
        report.details.update({"backup": newest.url,
                               **{k: round(v, 3) for k, v in timings.items() if k.endswith("_seconds")}})
        report.details["measured RTO"] = f"{timings['restore_seconds']:.1f}s (restore time)"
    except MaintError as exc:
        report.add(Finding("restore", store_config.url, Severity.CRITICAL, str(exc),
                           "the backup did not restore: treat it as lost and take a new one; read the message"))
    return finish_duty(report, config)

