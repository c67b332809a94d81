"""Cloud SQL's automated backups and point-in-time recovery: the decision with plain JSON shaped
like the Admin API's at a fixed `now`, then the real google-api-python-client against the local
server of tests/sqladmin_server.py."""

from __future__ import annotations

import pickle
import socket
from datetime import UTC, datetime, timedelta

import pytest

from maint.cloud_sql import (BACKUPS_CHECK, INSTANCE_CHECK, PITR_CHECK, assess_cloud_sql, backup_run_limit,
                             cloud_sql_state_from_json, cloud_sql_unreadable)
from maint.config import CloudSqlConfig
from maint.errors import CloudSqlError, TransientCloudSqlError, TransientError
from maint.paging import plan_pages
from maint.report import Severity
from tests.conftest import system_fixture
from tests.sqladmin_server import (SqlAdminServer, backup_run, daily_runs, database_instance, error_json,
                                   recovery_time)

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
PROJECT, INSTANCE = "acme-prod", "acme-db"
SUBJECT = f"{PROJECT}:{INSTANCE}"


def config(rpo: str = "15m", api_endpoint: str | None = None, instance: str = INSTANCE) -> CloudSqlConfig:
    return CloudSqlConfig(project=PROJECT, instance=instance, rpo=rpo, api_endpoint=api_endpoint)


def instance(**kw) -> dict:
    return database_instance(PROJECT, INSTANCE, **kw)


def run(run_id, status="SUCCESSFUL", *, hours_ago: float, **kw) -> dict:
    return backup_run(PROJECT, INSTANCE, run_id, status, window_start=NOW - timedelta(hours=hours_ago), **kw)


def healthy_runs(last_window_hours_ago: float = 10) -> list[dict]:
    return daily_runs(PROJECT, INSTANCE, NOW, last_window_ago=timedelta(hours=last_window_hours_ago))


FRESH_RECOVERY = recovery_time(NOW - timedelta(minutes=2), NOW - timedelta(days=7))


# --- the decision --------------------------------------------------------------------------------

# name -> (rpo, DatabaseInstance, backup runs, getLatestRecoveryTime answer or None, recovery error)
CASES = {
    "healthy-with-pitr": ("15m", instance(), healthy_runs(), FRESH_RECOVERY, ""),
    "healthy-daily-rpo-no-pitr": ("26h", instance(pitr=False), healthy_runs(), None, ""),
    "stopped": ("15m", instance(activation_policy="NEVER"), healthy_runs(), FRESH_RECOVERY, ""),
    "suspended": ("15m", instance(state="SUSPENDED", suspensionReason=["BILLING_ISSUE"]), healthy_runs(),
                  FRESH_RECOVERY, ""),
    "failed": ("15m", instance(state="FAILED"), healthy_runs(), FRESH_RECOVERY, ""),
    "pending-delete": ("15m", instance(state="PENDING_DELETE"), healthy_runs(), FRESH_RECOVERY, ""),
    "maintenance": ("15m", instance(state="MAINTENANCE"), healthy_runs(), FRESH_RECOVERY, ""),
    "pending-create": ("15m", instance(state="PENDING_CREATE"), [], FRESH_RECOVERY, ""),
    "unknown-state": ("15m", instance(state="SQL_INSTANCE_STATE_UNSPECIFIED"), healthy_runs(), FRESH_RECOVERY, ""),
    "backups-disabled": ("26h", instance(backups=False, pitr=False), healthy_runs(), None, ""),
    "replica-backups-disabled": ("26h", instance(backups=False, pitr=False, instance_type="READ_REPLICA_INSTANCE",
                                                 masterInstanceName="acme-db-primary"), [], None, ""),
    "newest-failed": ("26h", instance(), [
        run(3, "FAILED", hours_ago=10, error=("INTERNAL_ERROR", "An unknown error occurred.")),
        *healthy_runs(34)], FRESH_RECOVERY, ""),
    "newest-skipped": ("26h", instance(), [run(3, "SKIPPED", hours_ago=10), *healthy_runs(34)], FRESH_RECOVERY, ""),
    "on-demand-failed-after-good-automated": ("26h", instance(), [
        run(9, "FAILED", hours_ago=1, run_type="ON_DEMAND", error=("QUOTA_EXCEEDED", "Too many backups.")),
        *healthy_runs()], FRESH_RECOVERY, ""),
    "failed-then-succeeded": ("26h", instance(), [
        *healthy_runs(), run(3, "FAILED", hours_ago=34, error=("INTERNAL_ERROR", "An unknown error occurred."))],
        FRESH_RECOVERY, ""),
    "stale-for-26h-rpo": ("26h", instance(), healthy_runs(27), FRESH_RECOVERY, ""),
    "fresh-enough-for-26h-rpo": ("26h", instance(), healthy_runs(25.5), FRESH_RECOVERY, ""),
    "20h-old-with-15m-rpo": ("15m", instance(), healthy_runs(20), FRESH_RECOVERY, ""),
    "31h-old-with-15m-rpo": ("15m", instance(), healthy_runs(31), FRESH_RECOVERY, ""),
    "40h-old-with-48h-rpo": ("48h", instance(), healthy_runs(40), FRESH_RECOVERY, ""),
    "no-runs": ("26h", instance(), [], FRESH_RECOVERY, ""),
    "only-failed-runs": ("26h", instance(), [run(1, "FAILED", hours_ago=10, error=("X", "disk full"))],
                         FRESH_RECOVERY, ""),
    "deleted-run-does-not-count": ("26h", instance(), [run(2, "DELETED", hours_ago=10), *healthy_runs(40)],
                                   FRESH_RECOVERY, ""),
    "overdue": ("26h", instance(), [run(8, "OVERDUE", hours_ago=3), *healthy_runs(20)], FRESH_RECOVERY, ""),
    "running-after-good": ("26h", instance(), [run(8, "RUNNING", hours_ago=0.2), *healthy_runs()], FRESH_RECOVERY, ""),
    "pitr-off-15m-rpo": ("15m", instance(pitr=False), healthy_runs(), None, ""),
    "mysql-binlog-off-15m-rpo": ("15m", instance(database_version="MYSQL_8_0", binary_log=False), healthy_runs(),
                                 None, ""),
    "mysql-binlog-on": ("15m", instance(database_version="MYSQL_8_0", binary_log=True), healthy_runs(),
                        FRESH_RECOVERY, ""),
    "pitr-lagging": ("15m", instance(), healthy_runs(), recovery_time(NOW - timedelta(minutes=40)), ""),
    "pitr-lagging-daily-rpo": ("26h", instance(), healthy_runs(), recovery_time(NOW - timedelta(hours=30)), ""),
    "pitr-recovery-time-refused": ("15m", instance(), healthy_runs(), None,
                                   "400 INVALID_ARGUMENT: not supported for this instance"),
    "pitr-one-day-rpo-is-daily": ("1d", instance(pitr=False), healthy_runs(), None, ""),
}

# name -> {check: (severity, words its message holds)}; a check not named is OK.
EXPECTED = {
    "healthy-with-pitr": {PITR_CHECK: (Severity.OK, ["latest recovery time", "(2m ago)", "back to 7d ago",
                                                     "transaction logs kept 7d"]),
                          BACKUPS_CHECK: (Severity.OK, ["ended 9h47m ago", "7 runs listed",
                                                        "keeps 7 automated backups"])},
    "healthy-daily-rpo-no-pitr": {PITR_CHECK: (Severity.OK, ["off", "met by the daily automated backups"])},
    "stopped": {INSTANCE_CHECK: (Severity.CRITICAL, ["stopped", "NEVER"])},
    "suspended": {INSTANCE_CHECK: (Severity.CRITICAL, ["SUSPENDED", "BILLING_ISSUE"])},
    "failed": {INSTANCE_CHECK: (Severity.CRITICAL, ["FAILED"])},
    "pending-delete": {INSTANCE_CHECK: (Severity.CRITICAL, ["PENDING_DELETE"])},
    "maintenance": {INSTANCE_CHECK: (Severity.WARNING, ["MAINTENANCE", "not RUNNABLE"])},
    "pending-create": {INSTANCE_CHECK: (Severity.WARNING, ["PENDING_CREATE"]),
                       BACKUPS_CHECK: (Severity.CRITICAL, ["no successful backup run"])},
    "unknown-state": {INSTANCE_CHECK: (Severity.WARNING, ["SQL_INSTANCE_STATE_UNSPECIFIED"])},
    "backups-disabled": {BACKUPS_CHECK: (Severity.CRITICAL, ["automated backups are disabled"])},
    "replica-backups-disabled": {BACKUPS_CHECK: (Severity.CRITICAL, ["disabled", "no successful backup run"])},
    "newest-failed": {BACKUPS_CHECK: (Severity.CRITICAL, ["automated run 3", "FAILED",
                                                          "INTERNAL_ERROR: An unknown error occurred."])},
    "newest-skipped": {BACKUPS_CHECK: (Severity.CRITICAL, ["run 3", "SKIPPED"])},
    "on-demand-failed-after-good-automated": {},
    "failed-then-succeeded": {},
    "stale-for-26h-rpo": {BACKUPS_CHECK: (Severity.CRITICAL, ["ended 26h47m ago", "limit 26h (the RPO)"])},
    "fresh-enough-for-26h-rpo": {},
    "20h-old-with-15m-rpo": {},
    "31h-old-with-15m-rpo": {BACKUPS_CHECK: (Severity.CRITICAL, ["ended 30h47m ago", "limit 30h",
                                                                 "15m RPO is judged by point-in-time recovery"])},
    "40h-old-with-48h-rpo": {},
    "no-runs": {BACKUPS_CHECK: (Severity.CRITICAL, ["no successful backup run listed", "0 runs listed"])},
    "only-failed-runs": {BACKUPS_CHECK: (Severity.CRITICAL, ["FAILED: X: disk full", "no successful backup run"])},
    "deleted-run-does-not-count": {BACKUPS_CHECK: (Severity.CRITICAL, ["ended 39h47m ago"])},
    "overdue": {BACKUPS_CHECK: (Severity.WARNING, ["run 8 is OVERDUE"])},
    "running-after-good": {},
    "pitr-off-15m-rpo": {PITR_CHECK: (Severity.CRITICAL, ["a 15m RPO needs it: automated backups are daily"])},
    "mysql-binlog-off-15m-rpo": {PITR_CHECK: (Severity.CRITICAL, ["point-in-time recovery is off"])},
    "mysql-binlog-on": {},
    "pitr-lagging": {PITR_CHECK: (Severity.CRITICAL, ["lags 40m", "RPO 15m"])},
    "pitr-lagging-daily-rpo": {PITR_CHECK: (Severity.WARNING, ["lags 30h behind",
                                                               "the daily backups are what must meet it"])},
    "pitr-recovery-time-refused": {PITR_CHECK: (Severity.WARNING, ["unknown", "400 INVALID_ARGUMENT"])},
    "pitr-one-day-rpo-is-daily": {PITR_CHECK: (Severity.OK, ["24h RPO is met by the daily automated backups"])},
}

HINTS = {  # name -> (check, words its hint holds): the next step, with the command where one helps
    "stopped": (INSTANCE_CHECK, f"gcloud sql instances patch {INSTANCE} --activation-policy=ALWAYS "
                                f"--project={PROJECT}"),
    "suspended": (INSTANCE_CHECK, "billing"),
    "backups-disabled": (BACKUPS_CHECK, f"gcloud sql instances patch {INSTANCE} --backup-start-time=HH:MM"),
    "replica-backups-disabled": (BACKUPS_CHECK, "read replica (of acme-db-primary)"),
    "newest-failed": (BACKUPS_CHECK, f"gcloud sql backups describe 3 --instance={INSTANCE} --project={PROJECT}"),
    "31h-old-with-15m-rpo": (BACKUPS_CHECK, f"take a backup now: gcloud sql backups create --instance={INSTANCE}"),
    "newest-skipped": (BACKUPS_CHECK, f"gcloud sql operations list --instance={INSTANCE}"),
    "stale-for-26h-rpo": (BACKUPS_CHECK, f"gcloud sql backups list --instance={INSTANCE} --project={PROJECT}"),
    "no-runs": (BACKUPS_CHECK, "window starts 23:00 UTC"),
    "pitr-off-15m-rpo": (PITR_CHECK, f"gcloud sql instances patch {INSTANCE} --enable-point-in-time-recovery "
                                     f"--project={PROJECT}"),
    "mysql-binlog-off-15m-rpo": (PITR_CHECK, f"gcloud sql instances patch {INSTANCE} --enable-bin-log"),
    "pitr-lagging": (PITR_CHECK, f"gcloud sql instances get-latest-recovery-time {INSTANCE} --project={PROJECT}"),
}


def assess(name: str, now: datetime = NOW):
    rpo, body, runs, recovery, recovery_error = CASES[name]
    return assess_cloud_sql(config(rpo), cloud_sql_state_from_json(body, runs, recovery, recovery_error), now)


def test_every_case_has_its_expectation():
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", list(CASES))
def test_each_state_is_judged_for_the_right_reason(name):
    findings = {f.check: f for f in assess(name)}
    assert list(findings) == [INSTANCE_CHECK, BACKUPS_CHECK, PITR_CHECK]
    for check, finding in findings.items():
        severity, words = EXPECTED[name].get(check, (Severity.OK, []))
        assert finding.severity is severity, f"{check}: {finding.message}"
        for word in words:
            assert word in finding.message, f"{check}: {word!r} not in {finding.message!r}"
        assert finding.subject == SUBJECT and SUBJECT in finding.message
        if severity is not Severity.OK:
            assert finding.hint, f"{check}: a problem says what to do next"
            assert any(step in finding.hint for step in (f"--project={PROJECT}", "[[cloud_sql]]", "billing"))


@pytest.mark.parametrize("name", list(HINTS))
def test_the_hint_names_the_next_step(name):
    check, words = HINTS[name]
    finding = next(f for f in assess(name) if f.check == check)
    assert words in finding.hint


def test_backup_runs_are_held_to_a_day_and_the_rpo_to_pitr_when_it_is_short():
    assert backup_run_limit(timedelta(minutes=15)) == timedelta(hours=30)
    assert backup_run_limit(timedelta(hours=23)) == timedelta(hours=30)
    assert backup_run_limit(timedelta(hours=26)) == timedelta(hours=26)
    assert backup_run_limit(timedelta(days=3)) == timedelta(days=3)


def test_now_is_the_only_clock():
    # The same state, judged later, ages: no clock is read inside the decision.
    assert all(f.severity is Severity.OK for f in assess("healthy-with-pitr"))
    later = {f.check: f.severity for f in assess("healthy-with-pitr", NOW + timedelta(hours=30))}
    assert later == {INSTANCE_CHECK: Severity.OK, BACKUPS_CHECK: Severity.CRITICAL, PITR_CHECK: Severity.CRITICAL}


@pytest.mark.parametrize("name", [n for n in CASES if any(s is not Severity.OK for s, _ in EXPECTED[n].values())])
def test_a_page_opened_for_a_problem_is_resolved_by_the_next_good_run(name):
    bad = assess(name)
    opened = plan_pages("backup-verification", bad, [], ["critical", "warning"])
    assert opened.triggers
    good = assess("healthy-with-pitr")
    resolved = plan_pages("backup-verification", good, [key for key, _ in opened.triggers], ["critical", "warning"])
    assert not resolved.triggers and not resolved.still_open
    assert {f.check for _, f in resolved.resolves} == {f.check for _, f in opened.triggers}


def test_an_unreadable_instance_is_one_critical_finding_of_the_instance_check_with_its_hint():
    error = CloudSqlError(f"{SUBJECT}: reading the instance: 403", "grant roles/cloudsql.viewer")
    finding = cloud_sql_unreadable(config(), error)
    assert (finding.check, finding.subject, finding.severity) == (INSTANCE_CHECK, SUBJECT, Severity.CRITICAL)
    assert finding.message == str(error) and finding.hint == "grant roles/cloudsql.viewer"
    # A page it opened is resolved by the first run that reads the instance again.
    opened = plan_pages("backup-verification", [finding], [], ["critical"])
    resolved = plan_pages("backup-verification", assess("healthy-with-pitr"), [k for k, _ in opened.triggers],
                          ["critical"])
    assert not resolved.still_open


def test_errors_keep_their_hint_through_a_pickle_and_transient_ones_are_retryable():
    for error in (CloudSqlError("m", "h"), TransientCloudSqlError("m", "h")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.hint) == (type(error), "m", "h")
    assert isinstance(TransientCloudSqlError("m"), TransientError)
    assert not isinstance(CloudSqlError("m"), TransientError)


def test_json_that_is_not_the_apis_is_refused():
    with pytest.raises(KeyError):
        cloud_sql_state_from_json({"name": INSTANCE}, [])
    with pytest.raises(ValueError):
        cloud_sql_state_from_json(instance(), [{"id": "1", "status": "SUCCESSFUL", "endTime": "yesterday"}])


def test_no_default_credentials_is_an_error_naming_the_instance_and_the_fix(monkeypatch, tmp_path):
    from maint.tasks.cloud_sql import read_cloud_sql

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(CloudSqlError) as caught:
        read_cloud_sql(config())
    assert SUBJECT in str(caught.value) and "Application Default Credentials" in str(caught.value)
    assert "roles/cloudsql.viewer" in caught.value.hint


# --- against the Admin API stand-in ---------------------------------------------------------------

@system_fixture
def sqladmin():
    """The Admin API stand-in of tests/sqladmin_server.py, with nothing in it yet."""
    with SqlAdminServer() as server:
        yield server


def read_and_assess(api: SqlAdminServer, body: dict, runs: list[dict], recovery: dict | None = None,
                    rpo: str = "15m", now: datetime | None = None) -> dict:
    from maint.tasks.cloud_sql import read_cloud_sql

    api.add(body, runs, recovery)
    state = read_cloud_sql(config(rpo, api.url))
    return {f.check: f for f in assess_cloud_sql(config(rpo, api.url), state, now or NOW)}


def test_healthy_instance_with_pitr(sqladmin):
    findings = read_and_assess(sqladmin, instance(), healthy_runs(), FRESH_RECOVERY)
    assert [f.severity for f in findings.values()] == [Severity.OK] * 3
    assert all(f.subject == SUBJECT and SUBJECT in f.message for f in findings.values())
    assert "7 runs listed" in findings[BACKUPS_CHECK].message
    assert "transaction logs kept 7d" in findings[PITR_CHECK].message
    base = f"/v1/projects/{PROJECT}/instances/{INSTANCE}"
    assert [r.path for r in sqladmin.requests] == [base, f"{base}/backupRuns", f"{base}/getLatestRecoveryTime"]
    # An http:// endpoint is a test server or an emulator: no bearer token crosses it in clear text.
    assert all(r.authorization is None for r in sqladmin.requests)


def test_automated_backups_disabled(sqladmin):
    findings = read_and_assess(sqladmin, instance(backups=False, pitr=False), [], rpo="26h")
    assert findings[BACKUPS_CHECK].severity is Severity.CRITICAL
    assert f"{SUBJECT}: automated backups are disabled" in findings[BACKUPS_CHECK].message
    assert not sqladmin.requests_to("getLatestRecoveryTime")  # PITR is off: nothing to ask


def test_newest_run_failed_names_its_error(sqladmin):
    runs = [run(3, "FAILED", hours_ago=10, error=("INTERNAL_ERROR", "The disk is full.")), *healthy_runs(34)]
    finding = read_and_assess(sqladmin, instance(), runs, FRESH_RECOVERY, rpo="26h")[BACKUPS_CHECK]
    assert finding.severity is Severity.CRITICAL
    assert SUBJECT in finding.message and "FAILED: INTERNAL_ERROR: The disk is full." in finding.message


def test_newest_run_skipped(sqladmin):
    runs = [run(3, "SKIPPED", hours_ago=10), *healthy_runs(34)]
    finding = read_and_assess(sqladmin, instance(), runs, FRESH_RECOVERY, rpo="26h")[BACKUPS_CHECK]
    assert finding.severity is Severity.CRITICAL and "run 3" in finding.message and "SKIPPED" in finding.message


def test_stale_successful_run(sqladmin):
    finding = read_and_assess(sqladmin, instance(), healthy_runs(27), FRESH_RECOVERY, rpo="26h")[BACKUPS_CHECK]
    assert finding.severity is Severity.CRITICAL and f"{SUBJECT}: the newest successful backup ended 26h47m ago" \
        in finding.message


def test_pitr_disabled_with_a_15m_rpo(sqladmin):
    finding = read_and_assess(sqladmin, instance(pitr=False), healthy_runs())[PITR_CHECK]
    assert finding.severity is Severity.CRITICAL and SUBJECT in finding.message
    assert "--enable-point-in-time-recovery" in finding.hint


def test_latest_recovery_time_lagging_beyond_the_rpo(sqladmin):
    findings = read_and_assess(sqladmin, instance(), healthy_runs(), recovery_time(NOW - timedelta(hours=2)))
    assert findings[PITR_CHECK].severity is Severity.CRITICAL
    assert f"{SUBJECT}: point-in-time recovery lags 2h" in findings[PITR_CHECK].message


def test_recovery_time_the_api_refuses_is_a_warning_not_an_error(sqladmin):
    # The server answers 400 when it holds no recovery time, as the API does where it is not supported.
    findings = read_and_assess(sqladmin, instance(), healthy_runs(), None)
    assert findings[PITR_CHECK].severity is Severity.WARNING
    assert "400 INVALID_ARGUMENT" in findings[PITR_CHECK].message


def test_instance_not_runnable(sqladmin):
    findings = read_and_assess(sqladmin, instance(state="SUSPENDED", suspensionReason=["BILLING_ISSUE"]),
                               healthy_runs(), FRESH_RECOVERY)
    assert findings[INSTANCE_CHECK].severity is Severity.CRITICAL
    assert f"{SUBJECT} is SUSPENDED (suspension reason: BILLING_ISSUE)" in findings[INSTANCE_CHECK].message


def test_backup_runs_are_read_in_pages(sqladmin):
    runs = daily_runs(PROJECT, INSTANCE, NOW, days=250)
    finding = read_and_assess(sqladmin, instance(), runs, FRESH_RECOVERY)[BACKUPS_CHECK]
    assert "250 runs listed, 250 successful" in finding.message
    pages = sqladmin.requests_to("backupRuns")
    assert [r.query.get("pageToken") for r in pages] == [None, "100", "200"]
    assert all(r.query["maxResults"] == "100" for r in pages)


def unreadable(api: SqlAdminServer, cfg: CloudSqlConfig):
    from maint.tasks.cloud_sql import read_cloud_sql

    with pytest.raises(CloudSqlError) as caught:
        read_cloud_sql(cfg)
    finding = cloud_sql_unreadable(cfg, caught.value)
    assert (finding.check, finding.severity) == (INSTANCE_CHECK, Severity.CRITICAL)
    assert finding.message.startswith(f"{cfg.subject}: ")
    return caught.value, finding


def test_permission_denied_names_the_role_to_grant(sqladmin):
    sqladmin.add(instance(), healthy_runs())
    sqladmin.fail[(PROJECT, INSTANCE)] = 403
    error, finding = unreadable(sqladmin, config(api_endpoint=sqladmin.url))
    assert "403 PERMISSION_DENIED: The client is not authorized to make this request." in finding.message
    assert f"grant roles/cloudsql.viewer on project {PROJECT}" in finding.hint
    assert not isinstance(error, TransientError)
    assert len(sqladmin.requests) == 1  # a refusal is not retried


def test_admin_api_not_enabled_says_how_to_enable_it(sqladmin):
    sqladmin.fail[(PROJECT, INSTANCE)] = (403, f"Cloud SQL Admin API has not been used in project {PROJECT} "
                                          "before or it is disabled.", "accessNotConfigured")
    _, finding = unreadable(sqladmin, config(api_endpoint=sqladmin.url))
    assert f"gcloud services enable sqladmin.googleapis.com --project={PROJECT}" in finding.hint


def test_unknown_instance(sqladmin):
    _, finding = unreadable(sqladmin, config(api_endpoint=sqladmin.url, instance="acme-typo"))
    assert finding.subject == f"{PROJECT}:acme-typo" and "404 NOT_FOUND" in finding.message
    assert "is the instance name right?" in finding.hint


def test_server_errors_are_retried_once_then_transient(sqladmin):
    sqladmin.add(instance(), healthy_runs())
    sqladmin.fail[(PROJECT, INSTANCE)] = 503
    error, finding = unreadable(sqladmin, config(api_endpoint=sqladmin.url))
    assert isinstance(error, TransientError) and "503 UNAVAILABLE" in finding.message
    assert len(sqladmin.requests) == 2


def test_slow_api_times_out(sqladmin):
    sqladmin.add(instance(), healthy_runs())
    sqladmin.delay = 5.0
    cfg = CloudSqlConfig(project=PROJECT, instance=INSTANCE, api_endpoint=sqladmin.url, timeout="200ms")
    error, finding = unreadable(sqladmin, cfg)
    assert isinstance(error, TransientError) and "no answer within 0.2s" in finding.message


def test_server_unreachable(sqladmin):
    with socket.socket() as closed:  # a port nothing listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        error, finding = unreadable(sqladmin, config(api_endpoint=url))
    assert isinstance(error, TransientError)
    assert f"{SUBJECT}: reading the instance from {url}: cannot reach it: connection refused" == finding.message
    assert url in finding.hint


def test_an_answer_that_is_not_the_apis(sqladmin):
    sqladmin.add({**instance(), "state": None} | {"name": INSTANCE}, [])
    del sqladmin.instances[(PROJECT, INSTANCE)]["state"]
    _, finding = unreadable(sqladmin, config(api_endpoint=sqladmin.url))
    assert "is not the Cloud SQL Admin API's" in finding.message


def test_error_json_is_googles_shape():
    body = error_json(403)["error"]
    assert (body["code"], body["status"], body["errors"][0]["reason"]) == (403, "PERMISSION_DENIED", "notAuthorized")
