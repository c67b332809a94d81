"""Query-review decisions: the top queries from pg_stat_statements, and which of them got slower
since the previous review. Pure: the statements read, the previous review's snapshot, the policy
and `now` come in; findings and the next snapshot go out.

pg_stat_statements' counters are cumulative since its statistics were last reset, so "this week"
is the difference between two readings: the snapshot the previous review kept and today's. A reset
(`pg_stat_statements_reset()`, a restart without a saved file, or a statement evicted at
`pg_stat_statements.max` and counted again) makes a counter go down; then the current reading
is the whole interval (compared from zero), never a negative difference.

The slower-query check ("query-slower") reports only the queries that are slower, one finding
each with the subject `<database> queryid <N>`; the flow marks the check exhaustive when every
database was reviewed, so a page for a query that is fine again (or no longer among the top) is
resolved by the next review.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from maint.config import QueryReviewConfig
from maint.durations import format_duration
from maint.report import Finding, Severity

HIDDEN_TEXT = "<insufficient privilege>"  # what pg_stat_statements shows for other users' statements
TEXT_CHARS = 200
SNAPSHOT_FACTOR = 5  # the snapshot keeps the top 5 x `top` by total time (plus the top by mean)
# A query from 0.02 ms to 0.08 ms is "4x slower" and nobody's problem: plan and cache jitter on
# trivial statements. A regression must also cost at least this much more per call.
MIN_SLOWER_MS = 1.0
# Cache and temp-file notes are informational (OK), not warnings: a nightly report scanning a big
# table misses the cache every week by design, and a warning every Monday about the same steady
# state teaches people to ignore the channel. The regression (query-slower) is what changes, and
# what warns. The notes need enough volume in the interval to be worth a look:
LOW_HIT_RATIO = 0.90
MANY_READ_BLOCKS = 10_000  # about 78 MiB of 8 KiB blocks read from outside shared_buffers
MANY_TEMP_BLOCKS = 1_280  # about 10 MiB written to temporary files: sorts or hashes over work_mem


@dataclass(frozen=True)
class QueryStat:
    """One normalized statement in one database, summed over the roles that ran it (its queryid
    is the same for each). `queryid` None: a statement of another role that this role may not see
    (pg_stat_statements hides its queryid and text)."""

    queryid: int | None
    database: str
    users: tuple[str, ...]
    calls: int
    total_exec_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    temp_blks_read: int
    temp_blks_written: int
    query: str  # the normalized text, first TEXT_CHARS characters
    dbid: int | None = None

    @property
    def mean_exec_ms(self) -> float:
        return self.total_exec_ms / self.calls if self.calls else 0.0

    @property
    def hit_ratio(self) -> float | None:
        blocks = self.shared_blks_hit + self.shared_blks_read
        return self.shared_blks_hit / blocks if blocks else None

    @property
    def is_hidden(self) -> bool:
        return self.queryid is None or self.query.startswith(HIDDEN_TEXT)

    def minus(self, earlier: "QueryStat") -> "QueryStat":
        return replace(self, calls=self.calls - earlier.calls, total_exec_ms=self.total_exec_ms - earlier.total_exec_ms,
                       rows=self.rows - earlier.rows, shared_blks_hit=self.shared_blks_hit - earlier.shared_blks_hit,
                       shared_blks_read=self.shared_blks_read - earlier.shared_blks_read,
                       temp_blks_read=self.temp_blks_read - earlier.temp_blks_read,
                       temp_blks_written=self.temp_blks_written - earlier.temp_blks_written)

    def went_down_from(self, earlier: "QueryStat") -> bool:
        return self.calls < earlier.calls or self.total_exec_ms < earlier.total_exec_ms - 0.001


@dataclass(frozen=True)
class QuerySnapshot:
    """What one review keeps for the next: the counters of the top queries (no text: it is in the
    report, and the snapshot must stay small enough for Prefect Variables), and each one's mean
    as this review measured it, the next review's baseline."""

    taken_at: datetime
    stats_reset: datetime | None
    stats: dict[int, QueryStat] = field(default_factory=dict)
    baseline_ms: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = [[qid, s.calls, round(s.total_exec_ms, 3), s.rows, s.shared_blks_hit, s.shared_blks_read,
                 s.temp_blks_read, s.temp_blks_written, round(self.baseline_ms.get(qid, s.mean_exec_ms), 4)]
                for qid, s in self.stats.items()]
        return {"taken_at": self.taken_at.isoformat(),
                "stats_reset": self.stats_reset.isoformat() if self.stats_reset else None, "queries": rows}

    @classmethod
    def from_dict(cls, data: dict | None, database: str = "") -> "QuerySnapshot | None":
        """None for no snapshot, or for one this version cannot read (then the review starts over)."""
        try:
            stats, baselines = {}, {}
            for qid, calls, total, rows, hit, read, temp_read, temp_written, baseline in data["queries"]:
                stats[int(qid)] = QueryStat(int(qid), database, (), int(calls), float(total), int(rows), int(hit),
                                            int(read), int(temp_read), int(temp_written), "")
                baselines[int(qid)] = float(baseline)
            reset = data.get("stats_reset")
            return cls(datetime.fromisoformat(data["taken_at"]), datetime.fromisoformat(reset) if reset else None,
                       stats, baselines)
        except (TypeError, KeyError, ValueError):
            return None


@dataclass(frozen=True)
class StatementsReading:
    """What the task read: the statements (or why it could not), and the facts for the hints."""

    stats: list[QueryStat]
    stats_reset: datetime | None = None
    unavailable: str | None = None  # "not-installed" | "not-created" | "not-preloaded"
    schema: str | None = None  # where the extension lives in this database
    preload: str | None = None  # shared_preload_libraries, None when this role may not read it
    server_version: str = ""


# --- the review -------------------------------------------------------------------------------------

def _ranked(stats: list[QueryStat], key, n: int) -> list[QueryStat]:
    return sorted(stats, key=lambda s: (-key(s), s.queryid or 0))[:n]


def top_by_total(stats: list[QueryStat], n: int) -> list[QueryStat]:
    return _ranked([s for s in stats if not s.is_hidden], lambda s: s.total_exec_ms, n)


def top_by_mean(stats: list[QueryStat], n: int) -> list[QueryStat]:
    return _ranked([s for s in stats if not s.is_hidden and s.calls], lambda s: s.mean_exec_ms, n)


def _is_reset(previous: QuerySnapshot | None, stats_reset: datetime | None) -> bool:
    return previous is not None and stats_reset is not None and previous.stats_reset != stats_reset


def since_previous(stat: QueryStat, previous: QuerySnapshot | None, stats_reset: datetime | None) -> QueryStat | None:
    """The statement's counters over the interval since the previous snapshot: None when that
    snapshot did not have it; the whole reading when the counters were reset in between."""
    earlier = previous.stats.get(stat.queryid) if previous and stat.queryid is not None else None
    if earlier is None:
        return None
    if _is_reset(previous, stats_reset) or stat.went_down_from(earlier):
        return stat
    return stat.minus(earlier)


def _ms(value: float) -> str:
    """Milliseconds as the on-call reads them: '812.4 ms', and over 10 s as a duration ('2h5m')."""
    return f"{value:,.1f} ms" if value < 10_000 else format_duration(timedelta(milliseconds=value))


def _calls(count: int) -> str:
    return f"{count:,} call" + ("" if count == 1 else "s")


def _text(stat: QueryStat) -> str:
    return " ".join(stat.query.split())


def review_queries(database: str, stats: list[QueryStat], previous: QuerySnapshot | None, config: QueryReviewConfig,
                   now: datetime, stats_reset: datetime | None, *,
                   role: str | None = None) -> tuple[list[Finding], QuerySnapshot]:
    """The week's review of one database: the top queries (one OK finding), a warning per query
    whose mean since the previous snapshot is `slower_warning` times its baseline over at least
    `min_calls` calls, notes on cache misses and temp files, and a warning when other roles'
    statements are hidden from `role`. Returns the findings and the snapshot to keep."""
    findings: list[Finding] = []
    visible = [s for s in stats if not s.is_hidden]
    by_total, by_mean = top_by_total(visible, config.top), top_by_mean(visible, config.top)
    tracked_ms = sum(s.total_exec_ms for s in visible)
    if not visible:
        findings.append(Finding("top-queries", database, Severity.OK,
                                "pg_stat_statements has no statements for this database yet"))
    else:
        share = sum(s.total_exec_ms for s in by_total) / tracked_ms if tracked_ms else 0.0
        slowest = by_mean[0]
        since = f" since the statistics were reset at {stats_reset.isoformat(timespec='seconds')}" if stats_reset else ""
        findings.append(Finding(
            "top-queries", database, Severity.OK,
            f"{len(visible)} statements read; the top {len(by_total)} by total time take {share:.0%} of their "
            f"{_ms(tracked_ms)}{since}; highest mean: queryid {slowest.queryid} at {_ms(slowest.mean_exec_ms)} "
            f"over {_calls(slowest.calls)}"))

    if _is_reset(previous, stats_reset):
        findings.append(Finding("stats-reset", database, Severity.OK,
                                f"the statistics were reset at {stats_reset.isoformat(timespec='seconds')}, after the "
                                "previous review: this week is compared from zero"))

    kept = {s.queryid: s for s in [*top_by_total(visible, SNAPSHOT_FACTOR * config.top), *by_mean]}
    baselines: dict[int, float] = {}
    interval_note = (f" (previous review {format_duration(now - previous.taken_at)} ago)" if previous else "")
    for qid, stat in kept.items():
        interval = since_previous(stat, previous, stats_reset)
        baselines[qid] = stat.mean_exec_ms
        if interval is None:
            continue
        if interval.calls >= config.min_calls:
            baselines[qid] = interval.mean_exec_ms  # a week with enough calls is the better baseline
        old = previous.baseline_ms.get(qid, 0.0)
        new = interval.mean_exec_ms
        if (interval.calls >= config.min_calls and old > 0 and new >= config.slower_warning * old
                and new - old >= MIN_SLOWER_MS):
            findings.append(Finding(
                "query-slower", f"{database} queryid {qid}", Severity.WARNING,
                f"mean {_ms(new)} over {interval.calls:,} calls since the previous review, {new / old:.1f}x its "
                f"{_ms(old)} before{interval_note}: {_text(stat)}",
                "EXPLAIN (ANALYZE, BUFFERS) it with typical parameters: a changed plan (stale statistics: "
                "ANALYZE), a table that grew, a dropped or unused index, or lock waits"))

    for stat in by_total:
        findings += _resource_notes(database, stat, since_previous(stat, previous, stats_reset) or stat)

    hidden = [s for s in stats if s.is_hidden]
    if hidden:
        grantee = role or "the maint role"
        owners = sorted({u for s in hidden for u in s.users})
        findings.append(Finding(
            "stats-privilege", database, Severity.WARNING,
            f"{_calls(sum(s.calls for s in hidden))} taking {_ms(sum(s.total_exec_ms for s in hidden))} of other roles' "
            f"statements ({', '.join(owners) or 'unknown roles'}) show as {HIDDEN_TEXT}: they are left out of the "
            "review",
            f"GRANT pg_read_all_stats TO {grantee}; (or pg_monitor, which includes it) so it may see every role's "
            "statements"))

    return findings, QuerySnapshot(now, stats_reset, {q: s for q, s in kept.items() if q is not None}, baselines)


def _resource_notes(database: str, stat: QueryStat, interval: QueryStat) -> list[Finding]:
    notes = []
    subject = f"{database} queryid {stat.queryid}"
    ratio = interval.hit_ratio
    if ratio is not None and ratio < LOW_HIT_RATIO and interval.shared_blks_read >= MANY_READ_BLOCKS:
        notes.append(Finding("cache-hit-ratio", subject, Severity.OK,
                             f"shared-buffer hit ratio {ratio:.1%}: {interval.shared_blks_read:,} blocks read from "
                             f"outside shared_buffers over {_calls(interval.calls)}; an index or a smaller scan "
                             f"may help: {_text(stat)}"))
    if interval.temp_blks_written >= MANY_TEMP_BLOCKS:
        per_call = interval.temp_blks_written / interval.calls if interval.calls else interval.temp_blks_written
        notes.append(Finding("temp-files", subject, Severity.OK,
                             f"{interval.temp_blks_written:,} temp blocks written ({per_call:,.0f} per call): sorts or "
                             f"hashes over work_mem; more work_mem for its role, or an index that avoids the sort: "
                             f"{_text(stat)}"))
    return notes


def top_tables(stats: list[QueryStat], previous: QuerySnapshot | None, stats_reset: datetime | None,
               top: int) -> dict[str, list[dict]]:
    """The report's two tables: the top by total and by mean time, with this interval's figures."""
    def row(stat: QueryStat) -> dict:
        interval = since_previous(stat, previous, stats_reset)
        ratio = stat.hit_ratio
        return {"queryid": str(stat.queryid), "calls": stat.calls, "total ms": round(stat.total_exec_ms, 1),
                "mean ms": round(stat.mean_exec_ms, 2), "rows": stat.rows,
                "hit ratio": f"{ratio:.1%}" if ratio is not None else "-", "temp blocks written": stat.temp_blks_written,
                "calls since last review": interval.calls if interval else "-",
                "mean ms since last review": round(interval.mean_exec_ms, 2) if interval and interval.calls else "-",
                "users": ", ".join(stat.users), "query": _text(stat)}

    return {"by total time": [row(s) for s in top_by_total(stats, top)],
            "by mean time": [row(s) for s in top_by_mean(stats, top)]}


# --- when the review cannot run ---------------------------------------------------------------------

_MANAGED = ("managed services: Cloud SQL and RDS/Aurora preload it already (only CREATE EXTENSION is needed), "
            "Supabase creates it in schema extensions, Azure Flexible Server needs it in the "
            "shared_preload_libraries server parameter")


def unavailable_finding(database: str, reading: StatementsReading) -> Finding:
    """pg_stat_statements is missing: a warning, not critical. Nothing is broken in production, and
    a page would wake no one for a weekly review; but the review did not happen, which must not
    pass for a clean week (OK), so it goes to the channel until someone enables it."""
    preload = f" (shared_preload_libraries is {reading.preload!r})" if reading.preload is not None else ""
    restart = ("add it to shared_preload_libraries (shared_preload_libraries = 'pg_stat_statements', appended to "
               "any libraries already there) and restart PostgreSQL")
    if reading.unavailable == "not-installed":
        return Finding("pg_stat_statements", database, Severity.WARNING,
                       "the pg_stat_statements extension is not available on this server: the review cannot run",
                       f"install the contrib package (postgresql-contrib, or postgresql<version>-contrib), {restart}, "
                       f"then CREATE EXTENSION pg_stat_statements; in this database; {_MANAGED}")
    if reading.unavailable == "not-created":
        needs_preload = reading.preload is not None and "pg_stat_statements" not in reading.preload
        return Finding("pg_stat_statements", database, Severity.WARNING,
                       f"the pg_stat_statements extension is not created in this database{preload}: the review "
                       "cannot run",
                       (f"{restart}; then " if needs_preload else "") + "as its owner or an admin role run "
                       f"CREATE EXTENSION pg_stat_statements; in this database; {_MANAGED}")
    return Finding("pg_stat_statements", database, Severity.WARNING,
                   f"pg_stat_statements is created (schema {reading.schema}) but not loaded via "
                   f"shared_preload_libraries{preload}: the review cannot run",
                   f"{restart}; {_MANAGED}")
