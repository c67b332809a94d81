"""dr-drill: measured RTO/RPO against targets, the drill record, and a corrupt backup."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from maint.drill import action_items, assess_objective
from maint.report import Severity
from tests.conftest import DB_PASSWORD_ENV, run_json, write_config
from tests.test_restore import _copy_store, _scratch_databases


@pytest.mark.parametrize("measured, severity", [(10, Severity.OK), (24, Severity.OK), (25, Severity.WARNING),
                                                (30, Severity.WARNING), (31, Severity.CRITICAL)])
def test_objective_against_target(measured, severity):
    finding = assess_objective("rto", "prod", timedelta(minutes=measured), timedelta(minutes=30))
    assert finding.severity is severity and "against a target of 30m" in finding.message
    assert bool(action_items([finding])) is (severity is not Severity.OK)


@pytest.fixture(scope="module")
def drill_store(pg, prefect_harness, tmp_path_factory):
    from maint.flows.backup import backup

    store = tmp_path_factory.mktemp("drill-store")
    config = write_config(tmp_path_factory.mktemp("cfg") / "maint.toml", pg, f"file://{store}/")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_PASSWORD_ENV, pg.password)
        assert backup(config_path=str(config))["status"] == "ok"
    return store


def _drill(tmp_path, pg, store, capsys, rto="30m", rpo="26h"):
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/", extra=f"""
[dr_drill]
store = "prod-dumps"
server = "prod"
rto_target = "{rto}"
rpo_target = "{rpo}"
""")
    return run_json(capsys, config, "dr-drill")


def _checks(report) -> dict[str, dict]:
    return {f["check"]: f for f in report["findings"]}


def test_a_drill_that_meets_its_targets(pg, db_password, prefect_harness, tmp_path, capsys, drill_store):
    code, report = _drill(tmp_path, pg, drill_store, capsys)
    found = _checks(report)
    assert code == 0, report["findings"]
    assert found["rto"]["message"].endswith(": met") and found["rpo"]["message"].endswith(": met")
    record = report["details"]["record"]
    for heading in ("## Summary", "## Timeline", "## RTO / RPO", "## Result", "## Action items"):
        assert heading in record
    assert "PASSED: targets met" in record and "simulated loss of database prod declared" in record
    assert "backup verified" in record and "restored in" in record and "dropped scratch database" in record
    assert _scratch_databases(pg) == []


def test_a_drill_that_misses_its_rto(pg, db_password, prefect_harness, tmp_path, capsys, drill_store):
    code, report = _drill(tmp_path, pg, drill_store, capsys, rto="1ms")
    assert code == 2 and _checks(report)["rto"]["severity"] == "critical"
    assert "[MUST] rto (prod)" in report["details"]["record"]


def test_a_drill_that_misses_its_rpo(pg, db_password, prefect_harness, tmp_path, capsys, drill_store):
    def three_days_old(name: str, data: bytes) -> bytes:
        if name.endswith(".manifest.json"):
            manifest = json.loads(data)
            manifest["snapshot_time"] = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
            return json.dumps(manifest).encode()
        return data

    store = _copy_store(drill_store, tmp_path / "old", three_days_old)
    code, report = _drill(tmp_path, pg, store, capsys)
    rpo = _checks(report)["rpo"]
    assert code == 2 and rpo["severity"] == "critical" and "RPO 3d" in rpo["message"]
    assert _checks(report)["rto"]["severity"] == "ok", "the restore itself was fine"


def test_a_drill_whose_backup_is_corrupt_fails_cleans_up_and_says_so(pg, db_password, prefect_harness, tmp_path,
                                                                      capsys, drill_store):
    def flip(name: str, data: bytes) -> bytes:
        if name.endswith(".dump"):
            middle = len(data) // 2
            return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        return data

    store = _copy_store(drill_store, tmp_path / "corrupt", flip)
    code, report = _drill(tmp_path, pg, store, capsys)
    found = _checks(report)
    assert code == 2 and found["checksum"]["severity"] == "critical"
    assert found["rto"]["message"] == "not reached: no validated restore"
    record = report["details"]["record"]
    assert "FAILED" in record and "backup verification FAILED" in record
    assert _scratch_databases(pg) == []
