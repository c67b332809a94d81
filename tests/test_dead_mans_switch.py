"""The dead man's switch's windows and texts, and a critical run's one-line reason: pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from maint.config import DeadMansSwitchConfig
from maint.dead_mans_switch import describe_window, schedule_period, switch_dedup_key, switch_window
from maint.report import Finding, Report, Severity

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("cron, zone, period", [
    ("0 1 * * *", "UTC", timedelta(days=1)),
    ("0 3 * * 1", "Asia/Taipei", timedelta(days=7)),
    ("0 4 1 * *", "UTC", timedelta(days=31)),          # the longest month, not the next one
    ("*/15 * * * *", "UTC", timedelta(minutes=15)),
    ("0 9 * * 1-5", "UTC", timedelta(days=3)),         # Friday to Monday is the gap that matters
    ("30 2 * * *", "Europe/Berlin", timedelta(days=1, hours=1)),  # the autumn night: 02:30 comes twice, runs once
])
def test_schedule_period_is_the_longest_gap(cron, zone, period):
    assert schedule_period(cron, zone, NOW) == period


def test_window_is_period_plus_share_plus_grace_or_the_duty_override():
    settings = DeadMansSwitchConfig()
    assert switch_window("backup", "0 1 * * *", "UTC", settings, NOW) == timedelta(hours=26, minutes=54)
    tight = DeadMansSwitchConfig(grace=timedelta(0), grace_share=0, windows={"backup": timedelta(hours=2)})
    assert switch_window("backup", "0 1 * * *", "UTC", tight, NOW) == timedelta(hours=2)
    assert switch_window("vacuum", "0 3 * * 1", "UTC", tight, NOW) == timedelta(days=7)


def test_describe_window_and_key():
    assert describe_window(timedelta(hours=26, minutes=54)) == "1d 2h 54m"
    assert describe_window(timedelta(seconds=20)) == "20s"
    assert describe_window(timedelta(0)) == "0s"
    assert switch_dedup_key("backup") == "maint-backup-dead-mans-switch"


def _report(*findings: Finding) -> Report:
    return Report(duty="backup-verification", started_at=NOW, findings=list(findings))


def test_failure_reason_names_the_duty_and_its_worst_findings_on_one_line():
    report = _report(Finding("freshness", "prod-dumps", Severity.CRITICAL, "newest backup is 30h old\n(rpo 26h)"),
                     Finding("size", "prod-dumps", Severity.WARNING, "smaller than usual"),
                     Finding("integrity", "offsite", Severity.CRITICAL, "crc32c mismatch"),
                     Finding("integrity", "third", Severity.CRITICAL, "object missing"))
    reason = report.failure_reason()
    assert reason == ("backup-verification: CRITICAL (1 warning, 3 critical): prod-dumps: freshness: newest "
                      "backup is 30h old (rpo 26h); offsite: integrity: crc32c mismatch; and 1 more")
    assert Report.is_critical_reason("backup-verification", reason)
    assert not Report.is_critical_reason("backup", reason), "another duty's reason"
    assert not Report.is_critical_reason("backup-verification", "flow run x crashed: exit code -9")
    assert not Report.is_critical_reason("backup-verification", None)
    long = _report(Finding("integrity", "x" * 400, Severity.CRITICAL, "bad"))
    assert len(long.failure_reason()) == 300 and long.failure_reason().endswith("…")
