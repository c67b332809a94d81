"""Restore-test decisions: scratch database names, leftovers from crashed runs, validation.
Pure: no connection is made here, so the name guard runs before any connection is opened.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from maint.backups import TableCount
from maint.errors import MaintError
from maint.report import Finding, Severity

_STAMP = "%Y%m%d%H%M%S"
NEVER_SCRATCH = frozenset({"postgres", "template0", "template1"})


class ScratchNameRefused(MaintError):
    """A database name maint will not create or drop."""


def scratch_name(prefix: str, now: datetime) -> str:
    """prefix + UTC timestamp: the only shape of name the restore test creates or drops."""
    return prefix + now.astimezone(timezone.utc).strftime(_STAMP)


def check_scratch_name(name: str, prefix: str, protected: set[str]) -> None:
    """Refuse any name maint did not generate, and any configured database's name."""
    if name in NEVER_SCRATCH or name in protected:
        raise ScratchNameRefused(f"refusing to create or drop database {name!r}: it is a configured or system "
                                 "database, never a scratch database")
    if not re.fullmatch(re.escape(prefix) + r"\d{14}", name):
        raise ScratchNameRefused(f"refusing to create or drop database {name!r}: scratch databases are named "
                                 f"{prefix!r} followed by a UTC timestamp (YYYYmmddHHMMSS), and only maint makes them")


def scratch_created_at(name: str, prefix: str) -> datetime | None:
    if not re.fullmatch(re.escape(prefix) + r"\d{14}", name):
        return None
    return datetime.strptime(name[len(prefix):], _STAMP).replace(tzinfo=timezone.utc)


def leftover_scratch_databases(names: list[str], prefix: str, now: datetime, older_than: timedelta) -> list[str]:
    """Scratch databases a crashed run left behind: maint's own names, older than `older_than`."""
    leftovers = []
    for name in names:
        created = scratch_created_at(name, prefix)
        if created is not None and now - created >= older_than:
            leftovers.append(name)
    return sorted(leftovers)


def validate_row_counts(subject: str, expected: list[TableCount], found: dict[str, int]) -> list[Finding]:
    """Every table in the manifest exists in the restore with exactly the manifest's row count."""
    findings = []
    for table in expected:
        name = table.qualified_name
        if name not in found:
            findings.append(Finding("validation", f"{subject} {name}", Severity.CRITICAL,
                                    f"table {name} is missing from the restore (manifest: {table.rows:,} rows)",
                                    "the dump does not contain it: check pg_dump's filters and the backup job"))
        elif found[name] != table.rows:
            findings.append(Finding("validation", f"{subject} {name}", Severity.CRITICAL,
                                    f"table {name}: expected {table.rows:,} rows (manifest), found {found[name]:,}",
                                    "the backup does not hold what was counted at dump time: do not trust it"))
    if not findings:
        findings.append(Finding("validation", subject, Severity.OK,
                                f"all {len(expected)} tables of the manifest restored with exactly its row counts "
                                f"({sum(t.rows for t in expected):,} rows)"))
    return findings


def validate_tables_present(subject: str, listed: list[str], found: set[str]) -> list[Finding]:
    """Without a manifest: every table the archive's table of contents lists was restored."""
    missing = sorted(set(listed) - found)
    if missing:
        return [Finding("validation", f"{subject} {name}", Severity.CRITICAL,
                        f"table {name} is in the archive's table of contents but not in the restore",
                        "read pg_restore's errors above") for name in missing]
    return [Finding("validation", subject, Severity.OK,
                    f"all {len(listed)} tables of the archive's table of contents restored (no manifest: "
                    "row counts not checked)")]


def toc_tables(listing: str, restored: set[str] = frozenset()) -> list[str]:
    """`schema.table` for every TABLE DATA entry of `pg_restore --list` output.

    The listing prints "schema name owner" unquoted, so a name with a space in it is ambiguous:
    the reading that names a restored table wins, else schema and owner are one word each."""
    tables = []
    for line in listing.splitlines():
        if line.startswith(";") or " TABLE DATA " not in line:
            continue
        words = line.split(" TABLE DATA ", 1)[1].split(" ")
        if len(words) < 3:
            if len(words) == 2:
                tables.append(f"{words[0]}.{words[1]}")
            continue
        readings = [f"{' '.join(words[:i])}.{' '.join(words[i:j])}"
                    for i in range(1, len(words) - 1) for j in range(i + 1, len(words))]
        tables.append(next((r for r in readings if r in restored), f"{words[0]}.{' '.join(words[1:-1])}"))
    return tables
