"""Backup verification decisions: is the newest backup there, is it fresh, is its size sane, is it
intact. Pure: objects, manifests and the result of the streamed pass come in; findings go out.

Findings about a store's newest backup use the store's URL as their subject (the newest object
changes every day; the page for "backups in gs://acme/db/ are stale" must not) and name the
object in their message.
"""

from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from maint.backups import BackupEntry
from maint.durations import format_bytes, format_duration
from maint.report import Finding, Severity

SQL_TRAILERS = (b"-- PostgreSQL database dump complete", b"-- PostgreSQL database cluster dump complete")


def assess_presence(store_url: str, entries: list[BackupEntry]) -> Finding:
    if not entries:
        return Finding("presence", store_url, Severity.CRITICAL, f"no backup at all in {store_url}",
                       "is the backup job running and writing to this store? check [backup].store and its schedule")
    return Finding("presence", store_url, Severity.OK, f"{len(entries)} backup(s) in {store_url}")


def assess_freshness(store_url: str, newest: BackupEntry, now: datetime, rpo: timedelta) -> Finding:
    if newest.created_at is None:
        return Finding("freshness", store_url, Severity.CRITICAL,
                       f"newest backup {newest.url} has no known creation time (no manifest, and the store "
                       "reports none): it cannot be shown to be within the RPO",
                       "take a backup with `maint run backup`, whose manifest records its snapshot time")
    age = now - newest.created_at
    basis = "snapshot" if newest.manifest else "object creation"
    if age > rpo:
        return Finding("freshness", store_url, Severity.CRITICAL,
                       f"newest backup {newest.url} is {format_duration(age)} old ({basis} time "
                       f"{newest.created_at.isoformat(timespec='seconds')}); RPO is {format_duration(rpo)}",
                       "is the nightly backup running? look at the last `backup` flow runs, then take one now: "
                       "`maint run backup`")
    return Finding("freshness", store_url, Severity.OK,
                   f"newest backup {newest.url} is {format_duration(age)} old; RPO is {format_duration(rpo)}")


def assess_size(store_url: str, newest: BackupEntry, predecessors: list[BackupEntry]) -> Finding:
    """Zero bytes is critical; below 50% or above 200% of the predecessors' median a warning."""
    if newest.size_bytes == 0:
        return Finding("size", store_url, Severity.CRITICAL, f"newest backup {newest.url} is empty (0 bytes)",
                       "the dump failed without anyone noticing: read the backup job's log and take a new backup")
    sizes = [p.size_bytes for p in predecessors if p.size_bytes > 0]
    if not sizes:
        return Finding("size", store_url, Severity.OK,
                       f"newest backup {newest.url} is {format_bytes(newest.size_bytes)}; no predecessors to compare")
    median = statistics.median(sizes)
    ratio = newest.size_bytes / median
    described = (f"newest backup {newest.url} is {format_bytes(newest.size_bytes)}, {ratio:.1%} of the median "
                 f"{format_bytes(int(median))} of the previous {len(sizes)}")
    if ratio < 0.5:
        return Finding("size", store_url, Severity.WARNING, described,
                       "a much smaller dump may be missing tables or schemas: compare its manifest's tables "
                       "with the previous one's, and check for a mass delete or a changed pg_dump filter")
    if ratio > 2.0:
        return Finding("size", store_url, Severity.WARNING, described,
                       "a much larger dump: check for runaway table growth, or a lost compression setting")
    return Finding("size", store_url, Severity.OK, described)


# --- the streamed integrity pass -----------------------------------------------------------------

@dataclass
class IntegrityResult:
    """What one streamed read of a backup found. Digests are of the bytes actually read."""

    bytes_read: int
    sha256: str | None = None  # hex, computed when a manifest gives one to compare
    crc32c: str | None = None  # base64, computed when the store or manifest gives one to compare
    md5: str | None = None  # base64, computed when the store gives only an md5
    store_crc32c: str | None = None  # the CRC32C the store keeps, when its listing did not say (S3)
    archive_ok: bool = False
    archive_detail: str = ""  # what the reader said, on failure
    checker: str = ""  # which reader: pg_restore, gzip, plain


def assess_integrity(store_url: str, entry: BackupEntry, result: IntegrityResult) -> list[Finding]:
    findings = []
    url = entry.url
    # Manifest: must be readable and describe this object.
    if entry.manifest_problem:
        findings.append(Finding("manifest", store_url, Severity.CRITICAL,
                                f"manifest {entry.manifest_name} of {url} cannot be read: {entry.manifest_problem}",
                                "the backup did not complete properly: take a new backup and check the job's log"))
    elif entry.manifest:
        if entry.manifest.size_bytes != result.bytes_read or entry.manifest.size_bytes != entry.size_bytes:
            findings.append(Finding("manifest", store_url, Severity.CRITICAL,
                                    f"{url}: manifest says {entry.manifest.size_bytes} bytes, the store holds "
                                    f"{entry.size_bytes} and {result.bytes_read} were read",
                                    "the object was truncated or replaced after the backup: do not rely on it; "
                                    "take a new backup"))
        else:
            findings.append(Finding("manifest", store_url, Severity.OK,
                                    f"{url}: size {entry.manifest.size_bytes} bytes matches its manifest"))
    # Checksums: every one we have something to compare with.
    compared = []
    for label, expected, actual in (
            ("sha256 from the manifest", entry.manifest.sha256 if entry.manifest else None, result.sha256),
            ("crc32c from the manifest", entry.manifest.crc32c if entry.manifest else None, result.crc32c),
            ("crc32c from the object's metadata", entry.crc32c or result.store_crc32c, result.crc32c),
            ("md5 from the object's metadata", entry.md5 if not (entry.crc32c or result.store_crc32c) else None,
             result.md5)):
        if expected is None or actual is None:
            continue
        if expected != actual:
            findings.append(Finding("checksum", store_url, Severity.CRITICAL,
                                    f"{url}: {label} is {expected} but the bytes read give {actual}",
                                    "the backup is corrupt (bit rot, or changed after it was written): "
                                    "do not restore it; take a new backup and check the storage"))
            break
        compared.append(label)
    else:
        if compared:
            findings.append(Finding("checksum", store_url, Severity.OK, f"{url}: " + ", ".join(compared) + " match"))
        else:
            findings.append(Finding("checksum", store_url, Severity.WARNING,
                                    f"{url}: no checksum to compare (no manifest and no store metadata)",
                                    "write backups with `maint run backup`, which records sha256 and crc32c "
                                    "in a manifest; until then only the archive's readability is checked"))
    if result.archive_ok:
        findings.append(Finding("archive", store_url, Severity.OK,
                                f"{url}: read in full by {result.checker} ({format_bytes(result.bytes_read)})"))
    else:
        findings.append(Finding("archive", store_url, Severity.CRITICAL,
                                f"{url}: not a readable {entry.kind} backup: {result.archive_detail}",
                                "this backup would not restore: take a new backup now, then find out why "
                                "this one broke (truncated upload, disk full, killed pg_dump)"))
    return findings


class GzipSqlReader:
    """Decompresses a .sql.gz stream chunk by chunk and checks pg_dump's closing line.

    Multi-member gzip files (concatenated streams) are read as gzip itself reads them."""

    checker = "gzip"

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=31)
        self._tail = b""
        self._in_member = False  # bytes of a member were fed and its end not yet seen
        self.error = ""

    def feed(self, chunk: bytes) -> None:
        if self.error:
            return
        try:
            while chunk:
                self._in_member = True
                out = self._inflate.decompress(chunk)
                if out:
                    self._tail = (self._tail + out[-4096:])[-4096:]
                if self._inflate.eof:
                    self._in_member = False
                    chunk = self._inflate.unused_data
                    self._inflate = zlib.decompressobj(wbits=31)
                else:
                    chunk = b""
        except zlib.error as exc:
            self.error = f"gzip data is corrupt ({exc})"

    def finish(self) -> tuple[bool, str]:
        if self.error:
            return False, self.error
        if self._in_member:
            return False, "gzip stream ends early (truncated)"
        return _check_trailer(self._tail)


class PlainSqlReader:
    checker = "plain SQL reader"

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-4096:])[-4096:]

    def finish(self) -> tuple[bool, str]:
        return _check_trailer(self._tail)


def _check_trailer(tail: bytes) -> tuple[bool, str]:
    if any(trailer in tail for trailer in SQL_TRAILERS):
        return True, ""
    return False, "no \"PostgreSQL database dump complete\" line at the end: the dump is truncated or was not made by pg_dump"
