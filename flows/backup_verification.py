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

from prefect import flow

from maint.backups import BackupEntry, newest_first
from maint.config import BackupStoreConfig
from maint.errors import ConfigError, MaintError, StorageError
from maint.flows._duty import finish_duty, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.steps import list_backups, read_backup_in_one_pass
from maint.report import Finding, Severity
from maint.tasks.state import record_verified
from maint.verification import assess_freshness, assess_integrity, assess_presence, assess_size


@flow(name="backup-verification", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def backup_verification(config_path: str | None = None, store: str | None = None) -> dict:
    """Daily: every store's newest backup exists, is fresh for its RPO, has a sane size and
    reads back intact. `store` limits the run to one [[backup_stores]] entry by name.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
        store: Verify only this [[backup_stores]] entry (by name); empty means every store.
    """
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
