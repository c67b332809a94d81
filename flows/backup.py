"""Duty `backup`: pg_dump streamed into the backup store, with a manifest beside it.

Runbook:
  1. check the store is there and writable (before touching the database),
  2. take the database's backup lock (another backup of it running: report who runs it, stop),
  3. export a snapshot, run pg_dump --snapshot on it and stream the archive into the store,
     counting every table's rows in that same snapshot meanwhile,
  4. check that what the store holds is what pg_dump wrote (size, crc32c),
  5. write the manifest, which marks the backup complete; release the lock.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.flows._duty import (finding_from_error, finish_duty, is_transient, load_duty_config, page_run_failure,
                         start_report, utcnow)
from maint.flows.steps import DutyLock, holding_lock
from maint import __version__
from maint.backups import Manifest, backup_object_name, manifest_name
from maint.config import BackupConfig, BackupStoreConfig, DatabaseConfig
from maint.digests import Digests
from maint.durations import format_bytes
from maint.errors import (DatabaseError, DatabaseUnavailable, DumpError, MaintError, StorageError,
                          TransientStorageError)
from maint.report import Finding, Severity
from maint.tasks import postgres
from maint.tasks.storage import ObjectWriter, open_store

log = logging.getLogger("maint.backup")
_PROGRESS_EVERY_BYTES = 256 * 1024 * 1024


@task(name="check-store-writable", retries=3, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def check_store_writable(store_config: BackupStoreConfig) -> None:
    open_store(store_config).check_writable()


@task(name="dump-database-to-store", retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def dump_database_to_store(database: DatabaseConfig, store_config: BackupStoreConfig,
                           backup_config: BackupConfig) -> dict:
    """Stream one consistent dump into the store; return its manifest as a dict.

    Memory is flat in the dump's size: 1 MiB read from the pipe at a time, one upload chunk."""
    started_at = utcnow()
    store = open_store(store_config, chunk_size=backup_config.chunk_size)
    name = backup_object_name(database.name, started_at)
    pg_dump_version = postgres.client_version("pg_dump")
    with postgres.ConsistentDump(database, compress=backup_config.compress) as dump:
        writer = store.open_writer(name)
        try:
            log.info("pg_dump (pid %d) of %s streaming into %s", dump.pid, postgres.describe(database), writer.url)
            digests = _stream_into(writer, dump.chunks())
            tables = dump.finish()
            stored = writer.commit()
        except BaseException:
            writer.abort()
            raise
    size, crc = digests.size_bytes, digests.crc32c
    if stored.crc32c and stored.crc32c != crc:
        store.delete(stored.name, generation=stored.generation)
        raise TransientStorageError(f"{stored.url}: the store holds crc32c {stored.crc32c} but the dump streamed "
                                    f"was {crc}; the object was deleted (corrupted in transit)")
    if stored.size_bytes != size:
        raise StorageError(f"{stored.url}: the store holds {stored.size_bytes} bytes but pg_dump wrote {size}")
    manifest = Manifest(
        database=database.name, dbname=database.dbname, host=database.host, port=database.port,
        server_version=dump.snapshot.server_version, pg_dump_version=pg_dump_version,
        snapshot_time=dump.snapshot.snapshot_time, started_at=started_at, finished_at=utcnow(),
        dump_name=name, size_bytes=size, sha256=digests.sha256, crc32c=crc,
        tables=tables, maint_version=__version__)
    manifest_object = store.put_bytes(manifest_name(name), manifest.to_json().encode())
    return {"dump_url": stored.url, "manifest_url": manifest_object.url, "manifest": manifest.to_json()}


def _stream_into(writer: ObjectWriter, chunks: Iterator[bytes]) -> Digests:
    """Every chunk into the writer, digested on the way; progress logged every 256 MiB."""
    digests = Digests(sha256=True, crc32c=True)
    clock, next_report = time.monotonic(), _PROGRESS_EVERY_BYTES
    for chunk in chunks:
        digests.update(chunk)
        writer.write(chunk)
        if digests.size_bytes >= next_report:
            rate = digests.size_bytes / max(time.monotonic() - clock, 1e-6)
            log.info("dumped %s so far (%s/s)", format_bytes(digests.size_bytes), format_bytes(int(rate)))
            next_report += _PROGRESS_EVERY_BYTES
    return digests


def _hint(exc: MaintError, database: DatabaseConfig, store: BackupStoreConfig) -> str:
    if isinstance(exc, DatabaseUnavailable):
        return f"is PostgreSQL up at {database.host}:{database.port} and accepting connections from this host?"
    if isinstance(exc, DatabaseError):
        secret = f" and the password in ${database.password_env}" if database.password_env else ""
        return f"check user '{database.user}'{secret}, and pg_hba.conf for this host"
    if isinstance(exc, StorageError):
        return f"check that {store.url} exists and that this host's credentials may write to it"
    if isinstance(exc, DumpError):
        return "read pg_dump's message; a killed pg_dump often means the OOM killer or a timeout"
    return "see the flow run's logs"


def _check_and_subject(exc: MaintError, database: DatabaseConfig, store: BackupStoreConfig) -> tuple[str, str]:
    """Stable (check, subject) pairs, so a later good run resolves the page this one opened."""
    return ("store", store.url) if isinstance(exc, StorageError) else ("backup", database.address)


@flow(name="backup", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def backup(config_path: str | None = None) -> dict:
    """Nightly logical backup: pg_dump of [backup].database into [backup].store, with a manifest
    (sizes, checksums, exact row counts) that verification and the restore test rely on.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "backup")
    report = start_report("backup")
    database = config.database(config.backup.database)
    store = config.store(config.backup.store)
    attempts = config.backup.connect_attempts
    try:
        check_store_writable(store)
        with holding_lock(report, DutyLock.in_database("backup", database, database.dbname), config.locks,
                          retries=attempts - 1) as held:
            if not held:  # another backup of this database is running; the finding names it
                return finish_duty(report, config)
            made = dump_database_to_store.with_options(retries=attempts - 1)(database, store, config.backup)
    except MaintError as exc:
        check, subject = _check_and_subject(exc, database, store)
        report.add(finding_from_error(check, subject, exc, _hint(exc, database, store)))
        return finish_duty(report, config)
    manifest = Manifest.from_json(made["manifest"])
    seconds = (manifest.finished_at - manifest.started_at).total_seconds()
    report.add(Finding(
        "backup", database.address, Severity.OK,
        f"dumped '{database.name}' (PostgreSQL {manifest.server_version}) in {seconds:.1f}s: "
        f"{len(manifest.tables)} tables, {manifest.total_rows} rows counted in the dump's snapshot"))
    report.add(Finding(
        "store", store.url, Severity.OK,
        f"wrote {made['dump_url']} ({format_bytes(manifest.size_bytes)}, sha256 {manifest.sha256[:12]}…, "
        f"crc32c {manifest.crc32c}) and its manifest, which marks the backup complete"))
    report.details.update({
        "dump": made["dump_url"], "manifest": made["manifest_url"], "size_bytes": manifest.size_bytes,
        "snapshot_time": manifest.snapshot_time.isoformat(), "tables": len(manifest.tables),
        "rows": manifest.total_rows, "seconds": round(seconds, 3)})
    return finish_duty(report, config)
