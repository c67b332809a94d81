"""Duty `backup-verification`: every store's newest backup exists, is fresh, has a sane size and
is intact, checked in one streamed pass.

Runbook, for every [[backup_stores]] entry at once:
  1. list the store's backups and read the newest ones' manifests,
  2. pick the newest by real creation time and judge freshness against the RPO and size against
     the median of its predecessors,
  3. read the newest backup once, start to end: checksums (manifest sha256/crc32c, GCS
     crc32c/md5 pinned to the object's generation) and a full read of the archive
     (pg_restore for custom format, gzip plus pg_dump's closing line for .sql.gz) in the same pass.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import google_crc32c
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.flows._duty import finish_duty, is_transient, load_duty_config, page_run_failure, start_report, utcnow
from maint.backups import Manifest, ManifestError
from maint.config import BackupStoreConfig
from maint.durations import format_bytes
from maint.errors import ConfigError, MaintError, StorageError
from maint.report import Finding, Severity
from maint.verification import (KIND_CUSTOM, KIND_SQL_GZ, BackupEntry, GzipSqlReader, IntegrityResult,
                                PlainSqlReader, assess_freshness, assess_integrity, assess_presence, assess_size,
                                group_backups, newest_first)
from maint.tasks import postgres
from maint.tasks.state import record_verified
from maint.tasks.storage import crc32c_base64, open_store

log = logging.getLogger("maint.verification")
_PROGRESS_EVERY_BYTES = 512 * 1024 * 1024


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

    Memory is flat in the backup's size: one chunk in flight, plus pg_restore's own."""
    store = open_store(store_config)
    sha256 = hashlib.sha256() if entry.manifest else None
    crc32c = google_crc32c.Checksum() if (entry.manifest or entry.crc32c) else None
    md5 = hashlib.md5() if (entry.md5 and not entry.crc32c) else None
    if entry.kind == KIND_CUSTOM:
        reader = postgres.ArchiveReader()
    elif entry.kind == KIND_SQL_GZ:
        reader = GzipSqlReader()
    else:
        reader = PlainSqlReader()
    size, next_report, clock = 0, _PROGRESS_EVERY_BYTES, time.monotonic()
    try:
        for chunk in store.open_reader(entry.name, generation=entry.generation):
            if sha256:
                sha256.update(chunk)
            if crc32c:
                crc32c.update(chunk)
            if md5:
                md5.update(chunk)
            reader.feed(chunk)
            size += len(chunk)
            if size >= next_report:
                log.info("verified %s of %s (%s) so far", format_bytes(size), format_bytes(entry.size_bytes), entry.url)
                next_report += _PROGRESS_EVERY_BYTES
        ok, detail = reader.finish()
    except BaseException:
        if isinstance(reader, postgres.ArchiveReader):
            reader.kill()
        raise
    log.info("read %s (%s) in %.1fs", entry.url, format_bytes(size), time.monotonic() - clock)
    return IntegrityResult(
        bytes_read=size, sha256=sha256.hexdigest() if sha256 else None,
        crc32c=crc32c_base64(int.from_bytes(crc32c.digest(), "big")) if crc32c else None,
        md5=base64.b64encode(md5.digest()).decode() if md5 else None,
        archive_ok=ok, archive_detail=detail, checker=reader.checker)


@flow(name="backup-verification", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def backup_verification(config_path: str | None = None, store: str | None = None) -> dict:
    """Daily: every store's newest backup exists, is fresh for its RPO, has a sane size and
    reads back intact. `store` limits the run to one [[backup_stores]] entry by name."""
    config = load_duty_config(config_path, "backup-verification")
    report = start_report("backup-verification")
    known = {s.name: s for s in config.backup_stores}
    if store and store not in known:
        raise ConfigError([f"store: no [[backup_stores]] entry named {store!r} (known: {', '.join(known)})"])
    stores = [known[store]] if store else list(config.backup_stores)
    now = utcnow()

    listings = list_backups.map(stores)  # all stores at once
    to_read: list[tuple[BackupStoreConfig, BackupEntry]] = []
    for store_config, listing in zip(stores, listings):
        try:
            entries = listing.result()
        except MaintError as exc:
            report.add(Finding("presence", store_config.url, Severity.CRITICAL, str(exc),
                               _listing_hint(exc, store_config)))
            continue
        report.add(assess_presence(store_config.url, entries))
        if not entries:
            continue
        newest, *older = newest_first(entries)
        report.add(assess_freshness(store_config.url, newest, now, store_config.rpo))
        report.add(assess_size(store_config.url, newest, older[:store_config.size_window]))
        report.details[f"newest {store_config.name}"] = newest.url
        to_read.append((store_config, newest))

    passes = read_backup_in_one_pass.map([s for s, _ in to_read], [e for _, e in to_read])
    for (store_config, newest), one_pass in zip(to_read, passes):
        try:
            result = one_pass.result()
        except MaintError as exc:
            report.add(Finding("archive", store_config.url, Severity.CRITICAL, f"{newest.url}: {exc}",
                               "the backup could not be read back; retry, and check the store's health"))
            continue
        findings = assess_integrity(store_config.url, newest, result)
        for finding in findings:
            report.add(finding)
        if all(f.severity is not Severity.CRITICAL for f in findings):
            record_verified(store_config.name, newest.name)  # retention never deletes it
    return finish_duty(report, config)


def _listing_hint(exc: MaintError, store: BackupStoreConfig) -> str:
    if isinstance(exc, StorageError) and store.url.startswith("gs://"):
        return f"check that the bucket in {store.url} exists and this host's service account may list it"
    return f"check that {store.url} exists (is the volume mounted?) and is readable"
