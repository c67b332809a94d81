"""The backup duty end to end: real PostgreSQL, real pg_dump, both stores, through Prefect."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from maint.backups import Manifest
from tests.conftest import (DB_PASSWORD_ENV, Poller, artifacts_of, run_cli, run_json, table_counts,
                            write_config)


def _restore_and_count(pg, dump_path: Path, dbname: str) -> dict[str, int]:
    pg.create_database(dbname)
    env = {**os.environ, "PGPASSWORD": pg.password}
    subprocess.run(["pg_restore", "--exit-on-error", "-h", pg.host, "-p", str(pg.port), "-U", pg.superuser,
                    "-d", dbname, str(dump_path)], check=True, env=env, capture_output=True)
    return table_counts(pg, dbname)


def _manifest_counts(manifest: Manifest) -> dict[str, int]:
    return {f"{t.schema}.{t.table}": t.rows for t in manifest.tables}


def test_backup_to_local_directory_round_trip(pg, db_password, prefect_harness, tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/")

    code, report = run_json(capsys, config, "backup")

    assert code == 0, report
    assert report["duty"] == "backup" and report["status"] == "ok"
    assert {"started_at", "finished_at", "findings"} <= report.keys()
    dumps = sorted(store.glob("*.dump"))
    manifests = sorted(store.glob("*.dump.manifest.json"))
    assert len(dumps) == 1 and [m.name for m in manifests] == [dumps[0].name + ".manifest.json"]
    assert not list(store.glob(".*")), "no temporary file may be left behind"
    manifest = Manifest.from_json(manifests[0].read_text())
    source = table_counts(pg, "shop")
    assert _manifest_counts(manifest) == source
    assert source["public.order_items"] == 60000 and source["public.events_2026"] > 0
    assert manifest.size_bytes == dumps[0].stat().st_size
    import hashlib

    assert manifest.sha256 == hashlib.sha256(dumps[0].read_bytes()).hexdigest()
    assert manifest.database == "prod" and manifest.dbname == "shop" and manifest.server_version.startswith("15")
    assert _restore_and_count(pg, dumps[0], "restored_local") == source
    assert report["details"]["dump"] == f"file://{dumps[0]}"


def test_backup_to_gcs_round_trip(pg, db_password, prefect_harness, tmp_path, capsys, gcs_bucket):
    import base64

    import google_crc32c

    config = write_config(tmp_path / "maint.toml", pg, f"gs://{gcs_bucket.name}/database/prod/",
                          backup_extra="chunk_size = 262144")  # several resumable chunks

    code, report = run_json(capsys, config, "backup")

    assert code == 0, report
    blobs = {b.name: b for b in gcs_bucket.client.list_blobs(gcs_bucket.name)}
    dump_names = [n for n in blobs if n.endswith(".dump")]
    assert len(dump_names) == 1 and dump_names[0].startswith("database/prod/prod-")
    assert dump_names[0] + ".manifest.json" in blobs
    data = gcs_bucket.blob(dump_names[0]).download_as_bytes()
    manifest = Manifest.from_json(gcs_bucket.blob(dump_names[0] + ".manifest.json").download_as_bytes())
    assert manifest.size_bytes == len(data) > 262144
    assert manifest.crc32c == base64.b64encode(google_crc32c.Checksum(data).digest()).decode() == blobs[dump_names[0]].crc32c
    dump_file = tmp_path / "from-gcs.dump"
    dump_file.write_bytes(data)
    assert _restore_and_count(pg, dump_file, "restored_gcs") == _manifest_counts(manifest) == table_counts(pg, "shop")


def test_two_backups_never_overwrite_and_sort_by_time(pg, db_password, prefect_harness, tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/")
    assert run_json(capsys, config, "backup")[0] == 0
    assert run_json(capsys, config, "backup")[0] == 0
    dumps = sorted(store.glob("*.dump"), key=lambda p: p.name)
    assert len(dumps) == 2
    first, second = (Manifest.from_json(Path(str(d) + ".manifest.json").read_text()) for d in dumps)
    assert first.snapshot_time < second.snapshot_time, "name order must be time order"


def _assert_no_secret(pg, secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


def test_database_down_is_a_critical_finding_naming_the_database(pg, db_password, prefect_harness, tmp_path, capsys,
                                                                  caplog):
    from maint.tasks.postgres.server import free_port

    store = tmp_path / "store"
    store.mkdir()
    dead_port = free_port()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/", port=dead_port,
                          backup_extra="connect_attempts = 2")
    caplog.set_level(logging.DEBUG)

    code, report = run_json(capsys, config, "backup")

    assert code == 2 and report["status"] == "critical"
    [finding] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert finding["subject"] == f"127.0.0.1:{dead_port}/shop"
    assert f"127.0.0.1:{dead_port}/shop" in finding["message"] and "refused" in finding["message"].lower()
    assert "accepting connections" in finding["hint"]
    assert list(store.iterdir()) == [], "a failed backup leaves nothing"
    artifacts = artifacts_of(report["details"]["flow_run_id"])
    markdown = [a.data for a in artifacts if a.type == "markdown"]
    assert markdown and "critical" in markdown[0]
    assert {a.key for a in artifacts} == {"backup-report", "backup-findings"}, "both belong to the flow run"
    _assert_no_secret(pg, pg.password, str(report), caplog.text, *map(str, markdown))


def test_wrong_password_is_critical_and_never_printed(pg, db_password, prefect_harness, tmp_path, capsys, caplog,
                                                     monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    wrong = "not-the-password-5f1c9e"
    monkeypatch.setenv(DB_PASSWORD_ENV, wrong)
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/")
    caplog.set_level(logging.DEBUG)

    code, out, err = run_cli(capsys, "--config", str(config), "run", "backup")

    assert code == 2
    assert "CRITICAL" in out and f"127.0.0.1:{pg.port}/shop" in out
    assert "password authentication failed" in out
    assert f"${DB_PASSWORD_ENV}" in out  # the hint names the variable, not its value
    artifacts = artifacts_of(_latest_flow_run_id("backup"))
    assert artifacts
    for text in (out, err, caplog.text, *(str(a.data) for a in artifacts)):
        assert wrong not in text and pg.password not in text
    assert list(store.iterdir()) == []


def _latest_flow_run_id(flow_name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    return str(runs[0].id)


def test_missing_bucket_is_one_critical_finding_naming_it(pg, db_password, prefect_harness, tmp_path, capsys,
                                                          gcs_emulator):
    config = write_config(tmp_path / "maint.toml", pg, "gs://no-such-bucket-4711/db/")

    code, report = run_json(capsys, config, "backup")

    assert code == 2
    [finding] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert finding["subject"] == "gs://no-such-bucket-4711/db/"
    assert "gs://no-such-bucket-4711" in finding["message"] and "not found" in finding["message"]


def test_missing_local_directory_is_not_created(pg, db_password, prefect_harness, tmp_path, capsys):
    missing = tmp_path / "not-mounted"
    config = write_config(tmp_path / "maint.toml", pg, f"file://{missing}/")

    code, report = run_json(capsys, config, "backup")

    assert code == 2 and not missing.exists()
    assert "does not exist" in report["findings"][0]["message"] and str(missing) in report["findings"][0]["message"]


@pytest.fixture(scope="module")
def bigdb(pg):
    """A database whose dump takes long enough to be killed mid-stream."""
    pg.create_database("big")
    with pg.connect("big") as conn:
        conn.execute("CREATE TABLE blobs AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
                     "FROM generate_series(1, 1500000) g")
    return "big"


def _pg_dump_pids() -> list[int]:
    """pg_dump --snapshot processes started by this test process (the flow runs in-process, so
    pg_dump is its direct child): never another run's on the same machine."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
            if ppid == me and cmdline and cmdline[0].endswith(b"pg_dump") and \
                    any(a.startswith(b"--snapshot") for a in cmdline):
                pids.append(int(entry.name))
    return pids


def test_pg_dump_killed_midway_leaves_no_complete_looking_backup(pg, db_password, prefect_harness, bigdb, tmp_path,
                                                                  capsys):
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/", dbname=bigdb)

    def streaming() -> bool:  # the partial file has data: pg_dump is mid-way
        return any(p.stat().st_size > 64 * 1024 for p in store.glob(".*.partial-*")) and bool(_pg_dump_pids())

    killer = Poller(streaming, lambda: [os.kill(pid, signal.SIGKILL) for pid in _pg_dump_pids()])
    killer.start()
    code, report = run_json(capsys, config, "backup")
    killer.stop.set()

    assert killer.fired.is_set(), "pg_dump finished before it could be killed: make the table bigger"
    assert code == 2
    [finding] = [f for f in report["findings"] if f["severity"] == "critical"]
    assert "killed by signal 9" in finding["message"] and "'prod'" in finding["message"]
    assert list(store.iterdir()) == [], "neither a dump, a manifest nor a partial file may remain"


def test_config_without_backup_section_cannot_run(prefect_harness, tmp_path, capsys):
    config = tmp_path / "maint.toml"
    config.write_text('[[databases]]\nname = "prod"\nhost = "h"\ndbname = "d"\nuser = "u"\n')
    code, out, err = run_cli(capsys, "--config", str(config), "run", "backup")
    assert code == 3 and "[backup]" in err and out == ""


def test_every_duty_has_a_flow_and_a_missing_config_file_cannot_run(prefect_harness, tmp_path, capsys):
    from maint.duties import DUTIES
    from maint.flows import load_flow

    for duty in DUTIES.values():
        assert load_flow(duty).name == duty.name
    code, out, err = run_cli(capsys, "--config", str(tmp_path / "absent.toml"), "run", "dr-drill")
    assert code == 3 and "configuration file not found" in err and out == ""
