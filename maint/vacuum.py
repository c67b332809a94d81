"""Vacuum decisions: the bloat estimate and which tables get VACUUM (ANALYZE) or ANALYZE.
Pure: table statistics and `now` come in; estimates and a plan go out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from maint.config import VacuumConfig
from maint.durations import format_bytes, format_duration
from maint.report import Finding, Severity

ESTIMATE_MIN_BYTES = 1024 * 1024  # below this the estimate is noise; autovacuum copes anyway
_PAGE_HEADER = 24
_ITEM_POINTER = 4
_TUPLE_HEADER = 23
_MAXALIGN = 8


@dataclass(frozen=True)
class TableStats:
    schema: str
    name: str
    kind: str  # 'r' table or partition, 'p' partitioned parent, 'm' materialized view
    live_tuples: int
    dead_tuples: int
    last_vacuum: datetime | None  # the later of manual and auto
    last_analyze: datetime | None  # the later of manual and auto
    xid_age: int  # max of the table's and its TOAST table's age(relfrozenxid); 0 for parents
    size_bytes: int  # heap + TOAST pages from pg_class: no lock taken to learn it
    # inputs of the bloat estimate (None when the table has no statistics yet)
    reltuples: float | None = None
    relpages: int = 0
    block_size: int = 8192
    fillfactor: int = 100
    data_width: float | None = None  # sum over columns of avg_width * (1 - null_frac), from pg_stats
    columns: int = 0
    has_nulls: bool = False
    owner: str = ""
    # Whether maint's role may VACUUM/ANALYZE it: the table's or the database's owner (or a member
    # of that role), a superuser; from PostgreSQL 17 the MAINTAIN privilege.
    may_vacuum: bool = True

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def dead_ratio(self) -> float:
        total = self.live_tuples + self.dead_tuples
        return self.dead_tuples / total if total else 0.0


@dataclass(frozen=True)
class BloatEstimate:
    estimated: bool
    bloat_bytes: int = 0
    bloat_ratio: float = 0.0
    reason: str = ""  # why it was not estimated

    def describe(self) -> str:
        if not self.estimated:
            return f"not estimated ({self.reason})"
        return f"{format_bytes(self.bloat_bytes)} ({self.bloat_ratio:.0%})"


def _align(size: float, to: int = _MAXALIGN) -> int:
    return int(math.ceil(size / to) * to)


def estimate_bloat(table: TableStats) -> BloatEstimate:
    """Wasted heap space, in the style of ioguix's table-bloat query: the pages the live rows need
    at the table's fillfactor, from pg_stats' average column widths, against the pages it has.

    pg_class's page and row counts are only as recent as the last VACUUM, ANALYZE or CREATE INDEX,
    so bloat made since then is invisible to that comparison; the dead tuples counted since (the
    cumulative statistics, always current) at the same estimated row size are a floor for it."""
    if table.kind == "p":
        return BloatEstimate(False, reason="partitioned parent: no storage of its own")
    heap_bytes = table.relpages * table.block_size
    if heap_bytes < ESTIMATE_MIN_BYTES:
        return BloatEstimate(False, reason="under 1 MB")
    if table.reltuples is None or table.reltuples < 0 or table.data_width is None or table.columns == 0:
        return BloatEstimate(False, reason="no statistics: never analyzed")
    null_bitmap = (table.columns + 7) // 8 if table.has_nulls else 0
    tuple_bytes = _ITEM_POINTER + _align(_TUPLE_HEADER + null_bitmap) + _align(table.data_width)
    usable_per_page = (table.block_size - _PAGE_HEADER) * table.fillfactor / 100
    tuples_per_page = max(int(usable_per_page // tuple_bytes), 1)
    needed_pages = math.ceil(table.reltuples / tuples_per_page) if table.reltuples else 0
    page_bloat = max(table.relpages - needed_pages, 0) * table.block_size
    dead_bytes = table.dead_tuples * tuple_bytes
    bloat = max(page_bloat, dead_bytes)
    # When the dead tuples are the larger figure, the table is that much larger than pg_class says.
    size = max(heap_bytes, needed_pages * table.block_size + bloat)
    return BloatEstimate(True, bloat, bloat / size if size else 0.0)


@dataclass(frozen=True)
class VacuumAction:
    table: TableStats
    action: str  # "vacuum" (VACUUM (ANALYZE)) or "analyze"
    reasons: tuple[str, ...]


def needed_action(t: TableStats, now: datetime, policy: VacuumConfig) -> VacuumAction | None:
    """What the table needs, if anything: VACUUM (ANALYZE) for dead tuples or xid age, else ANALYZE
    when never or not recently analyzed.

    Partitioned parents are never vacuumed as a whole (each partition is judged on its own), but
    are analyzed when stale: autovacuum never analyzes them, and the planner needs their stats."""
    analyze_reasons = []
    if t.last_analyze is None:
        analyze_reasons.append("never analyzed")
    elif now - t.last_analyze > policy.stale_analyze:
        analyze_reasons.append(f"last analyzed {format_duration(now - t.last_analyze)} ago "
                               f"(stale_analyze {format_duration(policy.stale_analyze)})")
    if t.kind == "p":
        return VacuumAction(t, "analyze", tuple(analyze_reasons)) if analyze_reasons else None
    vacuum_reasons = []
    if t.dead_tuples >= policy.min_dead_tuples and t.dead_ratio >= policy.min_dead_ratio:
        vacuum_reasons.append(f"{t.dead_tuples:,} dead tuples ({t.dead_ratio:.0%})")
    if t.xid_age > policy.max_xid_age:
        vacuum_reasons.append(f"xid age {t.xid_age:,} over {policy.max_xid_age:,}")
    if vacuum_reasons:
        return VacuumAction(t, "vacuum", tuple(vacuum_reasons + analyze_reasons))
    return VacuumAction(t, "analyze", tuple(analyze_reasons)) if analyze_reasons else None


def plan_vacuum(tables: list[TableStats], now: datetime, policy: VacuumConfig) -> list[VacuumAction]:
    """Which of the tables maint may vacuum need work, most urgent first: wraparound danger, then
    VACUUM before ANALYZE, then the largest tables (most dead tuples breaking ties). Tables the
    role may not vacuum are left to `not_owned_findings`."""
    actions = [a for t in tables if t.may_vacuum and (a := needed_action(t, now, policy)) is not None]
    # Within an urgency class, largest first (as vacuumdb does): with several jobs the longest
    # vacuum starts early instead of finishing last alone.
    return sorted(actions, key=lambda a: (a.table.xid_age <= policy.max_xid_age, a.action != "vacuum",
                                          -a.table.size_bytes, -a.table.dead_tuples, a.table.qualified_name))


NOT_OWNED_CHECK = "not-owned"
_NAMED_AT_MOST = 5


def not_owned_findings(database: str, role: str, tables: list[TableStats], now: datetime,
                       policy: VacuumConfig) -> list[Finding]:
    """One finding per schema holding tables the role may not vacuum (on Supabase: auth, storage,
    realtime, owned by supabase_admin and the like), instead of one per table: those tables are
    skipped, not attempted. A note, since the role cannot do anything about them; critical only
    when one of them is past `max_xid_age`, because wraparound takes the database down whoever
    owns the table."""
    by_schema: dict[str, list[TableStats]] = {}
    for t in tables:
        if not t.may_vacuum:
            by_schema.setdefault(t.schema, []).append(t)
    findings = []
    for schema, skipped in sorted(by_schema.items()):
        owners = ", ".join(sorted({t.owner for t in skipped if t.owner})) or "another role"
        needing = sorted((a for t in skipped if (a := needed_action(t, now, policy)) is not None),
                         key=lambda a: (a.table.xid_age <= policy.max_xid_age, -a.table.dead_tuples, a.table.name))
        count = f"{len(skipped)} table{'s' if len(skipped) != 1 else ''}"
        them = "them" if len(skipped) != 1 else "it"
        message = f"not owned: {count} in schema {schema} (owned by {owners}) skipped, {role} may not vacuum {them}"
        if needing:
            named = "; ".join(f"{a.table.name}: {', '.join(a.reasons)}" for a in needing[:_NAMED_AT_MOST])
            more = f"; and {len(needing) - _NAMED_AT_MOST} more" if len(needing) > _NAMED_AT_MOST else ""
            which = f"{len(needing)} of them" if len(skipped) != 1 else "it"
            message += f"; {which} {'needs' if len(needing) == 1 else 'need'} vacuuming or analyzing ({named}{more})"
        urgent = [a for a in needing if a.table.xid_age > policy.max_xid_age]
        if urgent:
            hint = (f"wraparound danger in a table {role} may not vacuum: have its owner ({owners}) or a superuser run "
                    f"VACUUM (FREEZE) on {', '.join(a.table.qualified_name for a in urgent[:_NAMED_AT_MOST])} now "
                    "(on a managed service, its support)")
        else:
            hint = (f"nothing to do if autovacuum looks after schema {schema}; for maint to vacuum it, run it as the "
                    "owner or a member of that role (PostgreSQL 17: GRANT MAINTAIN or the pg_maintain role)")
        findings.append(Finding(NOT_OWNED_CHECK, _subject(database, schema),
                                Severity.CRITICAL if urgent else Severity.OK, message, hint))
    return findings


def report_order(tables: list[TableStats]) -> list[TableStats]:
    """The bloat report: largest first."""
    return sorted(tables, key=lambda t: (-t.size_bytes, t.qualified_name))


@dataclass(frozen=True)
class VacuumOutcome:
    table: str  # schema.table
    action: str
    status: str  # "done" | "skipped-locked" | "not-permitted" | "error" | "skipped-time"
    detail: str = ""
    seconds: float = 0.0
    dead_before: int | None = None
    dead_after: int | None = None


def _subject(database: str, table: str) -> str:
    return f"{database}:{table}"


def _verb(action: str) -> str:
    return "VACUUM (ANALYZE)" if action == "vacuum" else "ANALYZE"


def planned_finding(database: str, action: VacuumAction) -> Finding:
    """--dry-run: what would be done and why."""
    return Finding(action.action, _subject(database, action.table.qualified_name), Severity.OK,
                   f"would {_verb(action.action)}: " + "; ".join(action.reasons))


def assess_outcome(database: str, action: VacuumAction, outcome: VacuumOutcome, policy: VacuumConfig) -> Finding:
    subject = _subject(database, outcome.table)
    verb = _verb(outcome.action)
    # A table in wraparound danger that was not vacuumed is what takes databases down: page.
    urgent = action.table.xid_age > policy.max_xid_age
    missed = Severity.CRITICAL if urgent else Severity.WARNING
    if outcome.status == "done":
        dead = ""
        if outcome.dead_before is not None and outcome.dead_after is not None and outcome.action == "vacuum":
            dead = f"; dead tuples {outcome.dead_before:,} -> {outcome.dead_after:,}"
        return Finding(outcome.action, subject, Severity.OK, f"{verb} in {outcome.seconds:.1f}s{dead} "
                       f"({'; '.join(action.reasons)})")
    if outcome.status == "skipped-locked":
        return Finding(outcome.action, subject, missed, f"{verb} skipped: the table is locked by another session",
                       "find the lock holder (pg_locks joined to pg_stat_activity); the next run tries again")
    if outcome.status == "not-permitted":
        return Finding(outcome.action, subject, missed, f"{verb} skipped: {outcome.detail}",
                       "run maint's vacuum as the table's owner, or grant MAINTAIN (PostgreSQL 17+) / ownership")
    if outcome.status == "skipped-time":
        return Finding(outcome.action, subject, missed,
                       f"{verb} not started: the {format_duration(policy.window)} window had elapsed",
                       "widen [vacuum].window, or raise jobs, if this repeats")
    return Finding(outcome.action, subject, missed, f"{verb} failed: {outcome.detail}",
                   "read the message; a lock timeout means a long transaction held a lock the vacuum needed")


def bloat_rows(tables: list[TableStats], now: datetime) -> list[dict]:
    """The bloat and dead-tuple report, largest first, for the report artifact."""
    rows = []
    for t in report_order(tables):
        rows.append({
            "table": t.qualified_name + (" (partitioned)" if t.kind == "p" else ""),
            "size": format_bytes(t.size_bytes), "live": t.live_tuples, "dead": t.dead_tuples,
            "dead ratio": f"{t.dead_ratio:.1%}",
            "last vacuum": _ago(t.last_vacuum, now), "last analyze": _ago(t.last_analyze, now),
            "xid age": t.xid_age, "est. bloat": estimate_bloat(t).describe()})
    return rows


def _ago(moment: datetime | None, now: datetime) -> str:
    return "never" if moment is None else f"{format_duration(now - moment)} ago"
