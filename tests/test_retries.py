"""Transient faults are retried with backoff; permanent ones fail at once."""

from __future__ import annotations

import pytest

from maint.tasks.postgres.server import free_port
from tests.conftest import DB_PASSWORD_ENV, run_json, write_config
from tests.servers import FlakyProxy
from tests.test_notify import _forward


def _task_run_counts(flow_run_id: str) -> dict[str, int]:
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))
    return {run.name.rsplit("-", 1)[0]: run.run_count for run in runs}


def test_database_not_yet_accepting_connections_is_retried(pg, db_password, prefect_harness, tmp_path, capsys):
    port = free_port()
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/", port=port,
                          backup_extra="connect_attempts = 5")
    with _forward(port, pg.port, drop_first=2) as forward:  # closes the first two connections
        code, report = run_json(capsys, config, "backup")

    assert code == 0, report
    assert forward.accepted >= 3
    # The backup lock's connection is the run's first: it meets the refusals and is retried.
    assert _task_run_counts(report["details"]["flow_run_id"])["take-lock"] == 3
    assert len(list(store.glob("*.dump.manifest.json"))) == 1


def test_auth_refused_is_not_retried(pg, db_password, prefect_harness, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DB_PASSWORD_ENV, "wrong-password-for-retry-test")
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"file://{store}/", backup_extra="connect_attempts = 5")

    code, report = run_json(capsys, config, "backup")

    assert code == 2
    # The lock's task (the first to connect) failed, so the flow has its run id only via the Prefect API.
    from tests.test_backup import _latest_flow_run_id

    counts = _task_run_counts(_latest_flow_run_id("backup"))
    assert counts["take-lock"] == 1 and "dump-database-to-store" not in counts, counts


@pytest.mark.parametrize("status", [503, 0], ids=["http-503", "connection-reset"])
def test_gcs_transient_faults_during_upload_are_retried(pg, db_password, prefect_harness, tmp_path, capsys,
                                                        gcs_emulator, gcs_bucket, monkeypatch, status):
    failures = {("GET", "list"): 1, ("POST", "upload-start"): 1, ("PUT", "upload-chunk"): 2}
    with FlakyProxy(gcs_emulator, failures, status=status) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        config = write_config(tmp_path / "maint.toml", pg, f"gs://{gcs_bucket.name}/db/",
                              backup_extra="chunk_size = 262144")
        code, report = run_json(capsys, config, "backup")

    assert code == 0, "\n".join([f["message"] for f in report["findings"]] + [str(s) for s in proxy.seen])
    injected = [s for s in proxy.seen if s[2]]
    assert len(injected) == 4, proxy.seen
    names = [b.name for b in gcs_bucket.client.list_blobs(gcs_bucket.name)]
    assert len([n for n in names if n.endswith(".dump")]) == 1 and len(names) == 2
