"""backup-retention: the plan table-driven over years of synthetic backups; --apply on both stores."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from maint.config import RetentionConfig
from maint.retention import plan_retention
from maint.backups import BackupEntry
from tests.conftest import run_cli, run_json, wait_for, write_config
from tests.servers import FlakyProxy

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)  # a Friday
POLICY = RetentionConfig(store="s", keep_last=7, keep_daily=14, keep_weekly=8, keep_monthly=12, min_keep=3)
RPO = timedelta(hours=26)


def daily(days: int, *, hour: int = 1, name=lambda i, t: f"db-{t:%Y%m%d}.dump") -> list[BackupEntry]:
    entries = []
    for i in range(days):
        created = (NOW - timedelta(days=i)).replace(hour=hour, minute=0)
        entries.append(BackupEntry(name=name(i, created), url=f"gs://b/{name(i, created)}", kind="custom",
                                   size_bytes=100, object_created_at=created))
    return entries


def kept(plan) -> list[str]:
    return [d.backup.name for d in plan.decisions if d.keep]


def test_three_years_of_daily_backups():
    plan = plan_retention(daily(3 * 365), POLICY, NOW, rpo=RPO)
    names = kept(plan)
    # 14 days (covering keep_last 7); 8 ISO weeks add the Sundays of weeks 41-45 (Oct 11 to Nov 8),
    # and 12 months add the last day of each of the 11 months before this one.
    assert len(names) == 14 + 5 + 11
    assert {"db-20261108.dump", "db-20261101.dump", "db-20261011.dump"} <= set(names)
    assert "db-20261004.dump" not in names
    assert names[0] == "db-20261127.dump" and "db-20261114.dump" in names and "db-20261113.dump" not in names
    assert "db-20261031.dump" in names and "db-20251231.dump" in names and "db-20251130.dump" not in names
    assert len(plan.deletions) == 3 * 365 - len(names)
    assert all(d.reasons for d in plan.decisions)
    assert {r for d in plan.deletions for r in d.reasons} == {"outside every retention rule"}


@pytest.mark.parametrize("policy, expected_kept", [
    (RetentionConfig(store="s", keep_last=3, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1), 3),
    (RetentionConfig(store="s", keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=5), 5),
    (RetentionConfig(store="s", keep_last=0, keep_daily=10, keep_weekly=0, keep_monthly=0, min_keep=1), 10),
    (RetentionConfig(store="s", keep_last=0, keep_daily=0, keep_weekly=2, keep_monthly=0, min_keep=1), 2),
    (RetentionConfig(store="s", keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=3, min_keep=1), 3),
])
def test_each_rule_alone(policy, expected_kept):
    assert len(kept(plan_retention(daily(400), policy, NOW, rpo=RPO))) == expected_kept


def test_names_that_sort_against_time_are_judged_by_time():
    """WAL-G #636: sorting by name deleted the newest. Here names run backwards against time."""
    backups = daily(30, name=lambda i, t: f"backup-{i:04d}.dump")  # backup-0000 is the newest
    policy = RetentionConfig(store="s", keep_last=2, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1)
    assert kept(plan_retention(backups, policy, NOW, rpo=RPO)) == ["backup-0000.dump", "backup-0001.dump"]


def test_stopped_backups_delete_nothing():
    old = daily(100)[3:]  # the newest is three days old
    plan = plan_retention(old, POLICY, NOW, rpo=RPO)
    assert plan.deletions == [] and "backups have stopped" in plan.refused


def test_the_newest_verified_backup_is_kept():
    backups = daily(40)
    policy = RetentionConfig(store="s", keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1)
    plan = plan_retention(backups, policy, NOW, rpo=RPO, verified="db-20261020.dump")
    assert kept(plan) == ["db-20261127.dump", "db-20261020.dump"]
    assert dict((d.backup.name, d.reasons) for d in plan.decisions)["db-20261020.dump"] == (
        "the newest backup that passed verification",)


# --- the duty ------------------------------------------------------------------------------------

def _retention_config(tmp_path, pg, store_url: str) -> str:
    return write_config(tmp_path / "maint.toml", pg, store_url, extra="""
[retention]
store = "prod-dumps"
keep_last = 2
keep_daily = 0
keep_weekly = 0
keep_monthly = 0
min_keep = 2
""")


def _local_backups(store, count: int) -> list[str]:
    now = time.time()
    names = []
    for i in range(count):
        name = f"prod-{i:03d}.dump"
        for suffix in ("", ".manifest.json"):
            path = store / (name + suffix)
            path.write_bytes(b"x" * 10 if not suffix else b"{}")
            os.utime(path, (now - i * 86400 - 60, now - i * 86400 - 60))
        names.append(name)
    return names


@pytest.fixture
def password(pg, monkeypatch):
    from tests.conftest import DB_PASSWORD_ENV

    monkeypatch.setenv(DB_PASSWORD_ENV, pg.password)


def test_dry_run_by_default_then_apply_deletes_exactly_the_plan_locally(pg, prefect_harness, tmp_path, capsys,
                                                                        password):
    store = tmp_path / "store"
    store.mkdir()
    names = _local_backups(store, 5)
    config = _retention_config(tmp_path, pg, f"file://{store}/")

    code, report = run_json(capsys, config, "backup-retention")
    assert code == 0 and "dry run: 5 backups: keep 2, delete 3" in report["findings"][0]["message"]
    assert len(list(store.iterdir())) == 10, "a dry run deletes nothing"

    code, out, err = run_cli(capsys, "--config", str(config), "run", "backup-retention", "--apply")
    assert code == 0 and "deleted 3, skipped 0" in out
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [names[0], names[0] + ".manifest.json", names[1], names[1] + ".manifest.json"])


def test_apply_on_gcs_with_a_refused_delete(pg, prefect_harness, tmp_path, capsys, password, gcs_bucket, gcs_emulator,
                                            monkeypatch):
    created: list[datetime] = []
    for i in range(4):
        if created:  # each backup strictly newer than the last: the plan goes by creation time
            wait_for(lambda: datetime.now(timezone.utc) > created[-1], timeout=5,
                     what=f"the clock to pass {created[-1]}, when the previous upload was created")
        gcs_bucket.blob(f"db/prod-{i:03d}.dump").upload_from_string(b"x" * 10)
        manifest = gcs_bucket.blob(f"db/prod-{i:03d}.dump.manifest.json")
        manifest.upload_from_string(b"{}")
        created.append(manifest.time_created)
    gcs_bucket.blob("elsewhere/prod-999.dump").upload_from_string(b"outside the prefix")
    config = _retention_config(tmp_path, pg, f"gs://{gcs_bucket.name}/db/")
    # The store refuses the first DELETE (as GCS does for an object under a hold).
    with FlakyProxy(gcs_emulator, {("DELETE", "other"): 1}, status=403) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        code, out, err = run_cli(capsys, "--config", str(config), "run", "backup-retention", "--apply", "--json")
    import json

    report = json.loads(out)
    skipped = [f for f in report["findings"] if f["check"] == "retention-skipped"]
    assert code == 1 and len(skipped) == 1 and "refused (an object hold" in skipped[0]["message"]
    remaining = sorted(b.name for b in gcs_bucket.client.list_blobs(gcs_bucket.name))
    # Newest two kept; of the two planned deletions one was refused (both its files stay: the
    # dump's delete was refused, so its manifest was not touched); nothing outside the prefix.
    assert remaining == sorted(["db/prod-003.dump", "db/prod-003.dump.manifest.json",
                                "db/prod-002.dump", "db/prod-002.dump.manifest.json",
                                "db/prod-001.dump", "db/prod-001.dump.manifest.json",
                                "elsewhere/prod-999.dump"])
