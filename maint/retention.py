"""Backup retention: a pure plan of what to keep and what to delete, with a reason for each.

Grandfather-father-son by real creation time (never by name: names from other tools need not
sort by time). Invariants: never fewer than `min_keep` backups; never the newest backup that
passed verification; nothing at all when backups have stopped arriving (if the newest is older
than the store's RPO, deleting old ones would only shrink what is left to restore from).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo, timezone

from maint.backups import BackupEntry, newest_first
from maint.config import RetentionConfig
from maint.durations import format_duration


@dataclass(frozen=True)
class Decision:
    backup: BackupEntry
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RetentionPlan:
    decisions: list[Decision]  # newest first; undated backups (always kept) last
    refused: str | None = None  # why nothing may be deleted this time

    @property
    def deletions(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def _iso_week(moment: datetime) -> tuple[int, int]:
    year, week, _ = moment.isocalendar()
    return year, week


def plan_retention(backups: list[BackupEntry], policy: RetentionConfig, now: datetime, *, rpo: timedelta,
                   verified: str | None = None, zone: tzinfo = timezone.utc) -> RetentionPlan:
    # A backup whose age is unknown cannot be shown to be outside any rule: it is kept.
    undated = [Decision(b, True, ("creation time unknown: never deleted",)) for b in backups if b.created_at is None]
    ordered = newest_first([b for b in backups if b.created_at is not None])
    if not ordered:
        return RetentionPlan(undated)
    newest_age = now - ordered[0].created_at
    if newest_age > rpo:
        why = (f"no new backup for {format_duration(newest_age)} (rpo {format_duration(rpo)}): backups have "
               "stopped, so nothing is deleted; keep what is there and fix the backup job")
        return RetentionPlan([Decision(b, True, ("backups stopped arriving",)) for b in ordered] + undated,
                             refused=why)

    local_now = now.astimezone(zone)
    days = {(local_now - timedelta(days=i)).date() for i in range(policy.keep_daily)}
    weeks = {_iso_week(local_now - timedelta(weeks=i)) for i in range(policy.keep_weekly)}
    months, year, month = set(), local_now.year, local_now.month
    for _ in range(policy.keep_monthly):
        months.add((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)

    reasons: dict[str, list[str]] = {b.name: [] for b in ordered}
    for backup in ordered[:policy.keep_last]:
        reasons[backup.name].append(f"one of the newest {policy.keep_last}")
    seen_days, seen_weeks, seen_months = set(), set(), set()
    for backup in ordered:  # newest first: the first backup met in a period is its newest
        local = backup.created_at.astimezone(zone)
        day, week, mon = local.date(), _iso_week(local), (local.year, local.month)
        if day in days and day not in seen_days:
            seen_days.add(day)
            reasons[backup.name].append(f"newest of day {day.isoformat()}")
        if week in weeks and week not in seen_weeks:
            seen_weeks.add(week)
            reasons[backup.name].append(f"newest of ISO week {week[0]}-W{week[1]:02d}")
        if mon in months and mon not in seen_months:
            seen_months.add(mon)
            reasons[backup.name].append(f"newest of month {mon[0]}-{mon[1]:02d}")
    if verified in reasons:
        reasons[verified].append("the newest backup that passed verification")
    kept = sum(1 for r in reasons.values() if r)
    for backup in ordered:
        if kept >= policy.min_keep:
            break
        if not reasons[backup.name]:
            reasons[backup.name].append(f"min_keep {policy.min_keep}")
            kept += 1
    return RetentionPlan([Decision(b, bool(reasons[b.name]), tuple(reasons[b.name]) or
                                   ("outside every retention rule",)) for b in ordered] + undated)
