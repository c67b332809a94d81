"""Backups a service keeps, through the backup-verification flow as `maint run` runs it: Cloud SQL's
automated backups and PITR (the Admin API stand-in of tests/sqladmin_server.py) and Velero's
(the Kubernetes API stand-in of tests/k8s_server.py), with no backup store configured at all.
Each check pages on-call once and the next good run resolves the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import run_json
from tests.k8s_server import KubeApiServer, velero_backup, velero_location, velero_schedule, write_kubeconfig
from tests.sqladmin_server import SqlAdminServer, backup_run, daily_runs, database_instance, recovery_time
from tests.test_notify import _bodies, receivers  # noqa: F401

TOKEN = "velero-t0ken-not-for-logs"


def _config(tmp_path, api_endpoint: str, notify: str):
    path = tmp_path / "maint.toml"
    path.write_text(f"""
[notify]
page_on = ["critical"]
{notify}

[[cloud_sql]]
project = "acme-prod"
instance = "acme-db"
rpo = "15m"
api_endpoint = "{api_endpoint}"

[velero]
namespace = "velero"
rpo = "26h"
""")
    return path


def _velero(now: datetime, *, location_phase: str) -> list[dict]:
    done = now - timedelta(hours=3)
    return [velero_backup("daily-20261203010000", "Completed", started=done - timedelta(minutes=9), completed=done,
                          schedule="daily", created=done - timedelta(minutes=9)),
            velero_location("default", location_phase,
                            message=None if location_phase == "Available" else
                            "BackupStorageLocation \"default\" is unavailable: rpc error: AccessDenied"),
            velero_schedule("daily", last_backup=done - timedelta(minutes=9), created=now - timedelta(days=30))]


def _serve(api: SqlAdminServer, now: datetime, *, failed_last_night: bool) -> None:
    runs = daily_runs("acme-prod", "acme-db", now, days=5, last_window_ago=timedelta(hours=34))
    if failed_last_night:
        runs.append(backup_run("acme-prod", "acme-db", 1800000000000, "FAILED", window_start=now - timedelta(hours=10),
                               error=("ERROR_DISK_FULL", "the instance ran out of disk during the backup")))
    else:
        runs += daily_runs("acme-prod", "acme-db", now, days=1, first_id=1800000000000)
    api.add(database_instance("acme-prod", "acme-db"), runs, recovery_time(now - timedelta(minutes=2)))


def test_cloud_sql_and_velero_page_once_and_the_next_good_run_resolves(prefect_harness, tmp_path, capsys,
                                                                        monkeypatch, receivers):
    httpserver, _slack, notify = receivers
    now = datetime.now(UTC)
    with SqlAdminServer() as sqladmin:
        config = _config(tmp_path, sqladmin.url, notify)
        _serve(sqladmin, now, failed_last_night=True)
        with KubeApiServer({}, token=TOKEN, custom_objects=_velero(now, location_phase="Unavailable")) as kube:
            monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (kube.url, TOKEN)})))
            code, report = run_json(capsys, config, "backup-verification")

        found = {(f["check"], f["subject"]): f for f in report["findings"]}
        assert code == 2, report["findings"]
        backups = found[("cloud-sql-backups", "acme-prod:acme-db")]
        assert backups["severity"] == "critical" and "ERROR_DISK_FULL" in backups["message"], backups
        assert found[("cloud-sql-pitr", "acme-prod:acme-db")]["severity"] == "ok"
        location = found[("velero-location", "velero velero/location default")]
        assert location["severity"] == "critical" and "AccessDenied" in location["message"], location
        assert "velero backup-location get" in location["hint"]
        assert found[("velero-backup", "velero velero")]["severity"] == "ok"
        triggers = [e for e in _bodies(httpserver, "/v2/enqueue") if e["event_action"] == "trigger"]
        assert sorted(e["payload"]["component"] for e in triggers) == ["acme-prod:acme-db",
                                                                        "velero velero/location default"]
        assert TOKEN not in str(report) and all(TOKEN not in r.get_data(as_text=True) for r, _ in httpserver.log)

        httpserver.clear_log()
        _serve(sqladmin, now, failed_last_night=False)  # tonight's run succeeded; the bucket is reachable again
        with KubeApiServer({}, token=TOKEN, custom_objects=_velero(now, location_phase="Available")) as kube:
            monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (kube.url, TOKEN)})))
            code, report = run_json(capsys, config, "backup-verification")

    assert code == 0, [f for f in report["findings"] if f["severity"] != "ok"]
    events = _bodies(httpserver, "/v2/enqueue")
    assert sorted((e["event_action"], e["dedup_key"]) for e in events) == sorted(
        ("resolve", e["dedup_key"]) for e in triggers)


def test_velero_not_installed_is_one_critical_finding_and_cloud_sql_still_checked(prefect_harness, tmp_path, capsys,
                                                                                  monkeypatch):
    now = datetime.now(UTC)
    with SqlAdminServer() as sqladmin, KubeApiServer({}, token=TOKEN) as kube:  # no Velero CRDs on this cluster
        _serve(sqladmin, now, failed_last_night=False)
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (kube.url, TOKEN)})))
        code, report = run_json(capsys, _config(tmp_path, sqladmin.url, ""), "backup-verification")

    found = {(f["check"], f["subject"]): f for f in report["findings"]}
    velero = found[("velero-backup", "velero velero")]
    assert code == 2 and velero["severity"] == "critical", report["findings"]
    assert "CRDs are not installed" in velero["message"] and "velero.io" in velero["hint"]
    assert [f["severity"] for f in report["findings"] if f["subject"] == "acme-prod:acme-db"] == ["ok"] * 3
