"""The report every duty returns: status, exit code, serialisation, markdown, redaction."""

import json
from datetime import datetime, timedelta, timezone

import pytest

import maint.redaction
from maint.tasks.environment import resolve_secret
from maint.report import Finding, Report, Severity

OK, WARNING, CRITICAL = Severity.OK, Severity.WARNING, Severity.CRITICAL
STARTED = datetime(2026, 11, 25, 1, 0, 0, tzinfo=timezone.utc)
FINISHED = STARTED + timedelta(minutes=3, seconds=7)


def report_of(*severities: Severity) -> Report:
    report = Report("backup", STARTED, FINISHED)
    for i, severity in enumerate(severities):
        report.add(Finding(f"check-{i}", f"subject-{i}", severity, f"message {i}", f"hint {i}"))
    return report


@pytest.mark.parametrize("severities, expected", [
    ((), OK),
    ((OK,), OK),
    ((OK, OK), OK),
    ((WARNING,), WARNING),
    ((OK, WARNING, OK), WARNING),
    ((CRITICAL,), CRITICAL),
    ((OK, CRITICAL), CRITICAL),
    ((CRITICAL, WARNING), CRITICAL),
    ((WARNING, CRITICAL, OK, WARNING), CRITICAL),
])
def test_status_is_worst_severity(severities, expected):
    assert report_of(*severities).status is expected


def test_empty_report_is_ok():
    report = Report("health-check", STARTED)
    assert report.status is OK
    assert report.status.exit_code == 0
    assert report.problems() == []
    assert report.summary_line() == "health-check: OK (no findings)"


@pytest.mark.parametrize("severity, code", [(OK, 0), (WARNING, 1), (CRITICAL, 2)])
def test_exit_codes(severity, code):
    assert severity.exit_code == code
    assert report_of(OK, severity).status.exit_code == code


def test_problems_and_summary():
    report = report_of(OK, WARNING, CRITICAL, WARNING)
    assert [f.severity for f in report.problems()] == [WARNING, CRITICAL, WARNING]
    assert report.summary_line() == "backup: CRITICAL (1 ok, 2 warning, 1 critical)"


def test_to_dict_shape():
    report = report_of(OK, CRITICAL)
    report.details["object"] = "prod-20261125T010000.000Z.dump"
    data = report.to_dict()
    assert {"duty", "status", "started_at", "finished_at", "findings"} <= set(data)
    assert data["duty"] == "backup"
    assert data["status"] == "critical"
    assert data["started_at"] == "2026-11-25T01:00:00+00:00"
    assert data["finished_at"] == "2026-11-25T01:03:07+00:00"
    assert data["details"] == {"object": "prod-20261125T010000.000Z.dump"}
    assert data["findings"] == [
        {"check": "check-0", "subject": "subject-0", "severity": "ok", "message": "message 0", "hint": "hint 0"},
        {"check": "check-1", "subject": "subject-1", "severity": "critical", "message": "message 1",
         "hint": "hint 1"},
    ]
    json.dumps(data)  # JSON-ready as it is


def test_unfinished_report_to_dict():
    assert Report("vacuum", STARTED).to_dict()["finished_at"] is None


@pytest.mark.parametrize("report", [
    report_of(OK, WARNING, CRITICAL),
    report_of(),
    Report("vacuum", STARTED),
    Report("backup", STARTED, FINISHED, [Finding("c", "s", WARNING, "m")], {"size_bytes": 1234, "name": "x"}),
], ids=["three-findings", "no-findings", "unfinished", "details"])
def test_from_dict_round_trips(report):
    assert Report.from_dict(report.to_dict()) == report
    assert Report.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_finding_from_dict_without_hint():
    assert Finding.from_dict({"check": "c", "subject": "s", "severity": "warning", "message": "m"}) == \
        Finding("c", "s", WARNING, "m", "")


def test_to_markdown_has_a_row_per_finding():
    report = Report("backup", STARTED, FINISHED)
    report.add(Finding("backup.age", "prod-dumps", OK, "newest backup is 2h old", "nothing to do"))
    report.add(Finding("backup.size", "prod-dumps", CRITICAL, "size dropped 90%", "check pg_dump output"))
    report.add(Finding("backup.count", "prod-dumps", WARNING, "only 2 backups", "check retention"))
    markdown = report.to_markdown("http://prefect.example/runs/1")
    lines = markdown.splitlines()
    assert lines[0] == "# 🔴 backup: critical"
    assert "Started 2026-11-25T01:00:00+00:00, finished 2026-11-25T01:03:07+00:00." in lines
    assert "Flow run: http://prefect.example/runs/1" in lines
    rows = [line for line in lines if line.startswith("| ")]
    assert rows == [
        "| severity | check | subject | message | next step |",
        "| 🔴 critical | backup.size | `prod-dumps` | size dropped 90% | check pg_dump output |",
        "| ⚠️ warning | backup.count | `prod-dumps` | only 2 backups | check retention |",
        "| ✅ ok | backup.age | `prod-dumps` | newest backup is 2h old |  |",  # no next step when ok
    ]


def test_to_markdown_escapes_pipes_and_newlines():
    report = Report("health-check", STARTED, FINISHED)
    report.add(Finding("sql", "a|b", WARNING, "rows: 1 | 2\nmore", "run `SELECT a || b`"))
    rows = [line for line in report.to_markdown().splitlines() if line.startswith("| ⚠️")]
    assert rows == ["| ⚠️ warning | sql | `a\\|b` | rows: 1 \\| 2 more | run `SELECT a \\|\\| b` |"]


def test_to_markdown_details():
    report = report_of(OK)
    report.details.update({"size": "1.5 GiB", "tables": ["a", "b"]})
    markdown = report.to_markdown()
    assert "## Details" in markdown
    assert "- **size**: 1.5 GiB" in markdown.splitlines()
    assert "tables" not in markdown  # only scalar details


@pytest.fixture
def isolated_secrets(monkeypatch):
    """resolve_secret remembers values for redact(); keep this test's values out of the others."""
    monkeypatch.setattr(maint.redaction, "_known_secrets", set(maint.redaction._known_secrets))


def test_add_redacts_a_resolved_secret(monkeypatch, isolated_secrets):
    monkeypatch.setenv("MAINT_TEST_REPORT_SECRET", "pa55-w0rd-Xy")
    assert resolve_secret("MAINT_TEST_REPORT_SECRET", field="databases[0].password_env") == "pa55-w0rd-Xy"
    report = Report("backup", STARTED)
    added = report.add(Finding("connect", "prod", CRITICAL,
                               "connection to postgresql://maint:pa55-w0rd-Xy@10.0.0.5/app refused",
                               "check the password pa55-w0rd-Xy"))
    expected = Finding("connect", "prod", CRITICAL, "connection to postgresql://maint:[REDACTED]@10.0.0.5/app refused",
                       "check the password [REDACTED]")
    assert added == expected
    assert report.findings == [expected]
    assert "pa55-w0rd-Xy" not in json.dumps(report.to_dict())
    assert "pa55-w0rd-Xy" not in report.to_markdown()
    assert "pa55-w0rd-Xy" not in report.to_text()
