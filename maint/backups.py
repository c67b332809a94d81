"""Backups: object names and the manifest as maint writes them, and a store's backups as every
backup duty reads them (`BackupEntry`, newest by real creation time). Pure: no I/O, no clock.

A backup is `<database>-<UTC timestamp>.dump` (pg_dump custom format) plus
`<database>-<UTC timestamp>.dump.manifest.json`. The timestamp is fixed-width, so names sort by
time; the manifest is written only after the dump is complete and verified against what the store
received, so **a backup is complete when its manifest exists**.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def backup_object_name(database_name: str, started_at: datetime) -> str:
    """`prod-20261125T101500.123Z.dump`: fixed width, UTC, milliseconds, so names sort by time
    and two backups a second apart never share a name."""
    utc = started_at.astimezone(timezone.utc)
    stamp = utc.strftime("%Y%m%dT%H%M%S") + f".{utc.microsecond // 1000:03d}Z"
    return f"{_SAFE_NAME.sub('_', database_name)}-{stamp}{DUMP_SUFFIX}"


def manifest_name(dump_name: str) -> str:
    return dump_name + MANIFEST_SUFFIX


class ManifestError(ValueError):
    """A manifest that cannot be read: the message names the field."""


@dataclass(frozen=True)
class TableCount:
    schema: str
    table: str
    rows: int

    @property
    def qualified_name(self) -> str:
        """`schema.table`, as validation matches a manifest's tables with a restore's."""
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Manifest:
    database: str  # the [[databases]] name
    dbname: str
    host: str
    port: int
    server_version: str
    pg_dump_version: str
    snapshot_time: datetime  # the moment the dump's data is consistent to: the backup's RPO point
    started_at: datetime
    finished_at: datetime
    dump_name: str
    size_bytes: int
    sha256: str  # hex
    crc32c: str  # base64 of the big-endian value, comparable with GCS object metadata
    tables: list[TableCount] = field(default_factory=list)
    format: int = MANIFEST_FORMAT
    dump_format: str = "custom"
    maint_version: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("snapshot_time", "started_at", "finished_at"):
            data[key] = getattr(self, key).isoformat()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        try:
            data: dict[str, Any] = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError("not a JSON object")
        import dataclasses

        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ManifestError(f"missing field {missing[0]}")
        try:
            for key in ("snapshot_time", "started_at", "finished_at"):
                data[key] = datetime.fromisoformat(data[key])
            data["tables"] = [TableCount(**t) for t in data.get("tables", [])]
            return cls(**data)
        except KeyError as exc:
            raise ManifestError(f"missing field {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"malformed field: {exc}") from None


# --- backups in a store ----------------------------------------------------------------------

KIND_CUSTOM = "custom"  # pg_dump --format=custom
KIND_SQL_GZ = "sql.gz"  # plain SQL, gzip-compressed
KIND_SQL = "sql"  # plain SQL
_KINDS = ((".sql.gz", KIND_SQL_GZ), (DUMP_SUFFIX, KIND_CUSTOM), (".backup", KIND_CUSTOM), (".sql", KIND_SQL))


def backup_kind(name: str) -> str | None:
    for suffix, kind in _KINDS:
        if name.endswith(suffix):
            return kind
    return None


@dataclass(frozen=True)
class BackupEntry:
    """One backup in a store: the dump object, and its manifest if it has one."""

    name: str
    url: str
    kind: str
    size_bytes: int
    object_created_at: datetime | None  # GCS time_created, or a local file's mtime; None: not reported
    generation: int | str | None = None
    crc32c: str | None = None  # from the store's metadata (GCS)
    md5: str | None = None  # from the store's metadata (GCS; absent for composite objects)
    manifest_name: str | None = None
    manifest_generation: int | str | None = None
    manifest: Manifest | None = None
    manifest_problem: str | None = None  # a manifest exists but cannot be read

    @property
    def created_at(self) -> datetime | None:
        """Real creation time: the snapshot the manifest records, else the object's own time;
        None when neither is known, and then the backup is never judged fresh nor deleted."""
        return self.manifest.snapshot_time if self.manifest else self.object_created_at


_UNDATED = datetime.min.replace(tzinfo=timezone.utc)  # sorts an undated backup as the oldest


def group_backups(objects) -> list[BackupEntry]:
    """StoredObjects -> backups, oldest first by object time (manifests are attached later).

    Objects that are neither a dump nor a manifest (notes, partial uploads) are ignored."""
    by_name = {o.name: o for o in objects}
    entries = []
    for o in objects:
        kind = backup_kind(o.name)
        if kind is None or o.name.endswith(MANIFEST_SUFFIX):
            continue
        manifest = by_name.get(o.name + MANIFEST_SUFFIX)
        entries.append(BackupEntry(name=o.name, url=o.url, kind=kind, size_bytes=o.size_bytes,
                                   object_created_at=o.created_at, generation=o.generation, crc32c=o.crc32c,
                                   md5=o.md5, manifest_name=manifest.name if manifest else None,
                                   manifest_generation=manifest.generation if manifest else None))
    return sorted(entries, key=lambda e: e.object_created_at or _UNDATED)


def newest_first(entries: list[BackupEntry]) -> list[BackupEntry]:
    """By real creation time, never by name: names from other tools need not sort by time.
    A backup without a known time comes last: nothing says it is the newest."""
    return sorted(entries, key=lambda e: e.created_at or _UNDATED, reverse=True)
