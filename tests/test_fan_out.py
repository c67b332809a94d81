"""Fan-out (issue 14): backup-verification with `fan_out` starts one child run of its deployment per
store, all at once, and reports each child's outcome; each child pages its own findings and keeps
its open pages in its store's list. Pure decisions table-driven; the open-pages lists against the
harness, with a PagerDuty receiver that holds two runs' events until both are in flight; the whole
fan-out on a process pool with a real long-running `prefect worker start`."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from werkzeug import Response

from maint.config import BackupStoreConfig, NotifyConfig
from maint.flows.backup_verification import ChildRun, assess_child_run
from maint.paging import RUN_FAILED_CHECK, PageScope, dedup_key, open_pages_after, open_pages_in_view
from maint.report import Finding, Report, Severity
from tests.conftest import (DB_PASSWORD_ENV, forget_maint, interrupt, maint_process, prefect_api, system_fixture,
                            wait_for, write_config)

DUTY = "backup-verification"
OK, WARNING, CRITICAL = Severity.OK, Severity.WARNING, Severity.CRITICAL
PD_ENV = "MAINT_TEST_PD_KEY"
SLACK_ENV = "MAINT_TEST_SLACK"
ROUTING_KEY = "routing-key-of-the-fan-out-tests"
STORE = BackupStoreConfig(name="replica-dumps", url="file:///var/backups/replica/", database="prod")


# --- pure: a child's outcome as one finding --------------------------------------------------------

def child(state_type: str, state_name: str, message: str = "", findings=None) -> ChildRun:
    return ChildRun("dapper-otter-replica-dumps", state_type, state_name, message, findings,
                    url="http://prefect.example/flow-runs/flow-run/42")


CRITICAL_REASON = ("backup-verification: CRITICAL (2 critical): file:///var/backups/replica/: checksum: sha256 "
                   "mismatch; file:///var/backups/replica/: archive: pg_restore failed")


@pytest.mark.parametrize("seen, severity, words", [
    (child("COMPLETED", "Completed", findings=[Finding("presence", STORE.url, OK, "3 backups")] * 6),
     OK, "Completed: ok (6 findings, all ok)"),
    (child("COMPLETED", "Completed", findings=[Finding("presence", STORE.url, OK, "3 backups"),
                                               Finding("size", STORE.url, WARNING, "40.0% of the median")]),
     WARNING, "Completed: warning: size: 40.0% of the median"),
    (child("FAILED", "Failed", CRITICAL_REASON, [Finding("checksum", STORE.url, CRITICAL, "sha256 mismatch")]),
     CRITICAL, f"Failed: {CRITICAL_REASON}"),
    (child("FAILED", "Failed", CRITICAL_REASON), CRITICAL, "Failed: backup-verification: CRITICAL (2 critical)"),
    (child("FAILED", "Failed", "Flow run encountered an exception: NotificationError: could not deliver"),
     CRITICAL, "Failed before it could report: Flow run encountered an exception"),
    (child("CRASHED", "Crashed", "Flow run infrastructure exited with non-zero status code -9."),
     CRITICAL, "Crashed: Flow run infrastructure exited with non-zero status code -9."),
    (child("CANCELLED", "Cancelled", "cancelled by hand"), CRITICAL, "was Cancelled: cancelled by hand"),
    (child("SCHEDULED", "Late"), CRITICAL, "never started in 5h24m (still Late)"),
    (child("PENDING", "Pending"), CRITICAL, "never started in 5h24m (still Pending)"),
    (child("RUNNING", "Running"), CRITICAL, "still Running after 5h24m; left to finish, it pages its own findings"),
    (child("COMPLETED", "Completed", findings=[]), WARNING, "Completed but published no findings"),
])
def test_a_child_run_is_one_finding_of_its_store(seen, severity, words):
    finding = assess_child_run(STORE, seen, timedelta(hours=5, minutes=24))
    assert (finding.check, finding.subject, finding.severity) == ("child-run", STORE.url, severity)
    assert finding.message.startswith("child run dapper-otter-replica-dumps (http://prefect.example/flow-runs/"
                                      "flow-run/42) "), finding.message
    assert words in finding.message, finding.message
    assert bool(finding.hint) is (severity is not OK)


# --- pure: which list of open pages a run reads and writes ------------------------------------------

def test_a_run_of_one_store_plans_over_its_own_list_and_its_own_findings_only():
    a, b = "file:///a/", "file:///b/"
    fresh_a, size_a, size_b = (dedup_key(DUTY, c, s) for c, s in (("freshness", a), ("size", a), ("size", b)))
    failed = dedup_key(DUTY, RUN_FAILED_CHECK, DUTY)
    lists = {"a": [fresh_a], "b": ["b-key"], None: [size_a, size_b, failed]}
    scope = PageScope(scope="a", adopt_from=(None,))
    reported = {fresh_a, size_a}

    assert scope.lists == ("a", None)
    assert open_pages_in_view(scope, lists, reported) == sorted([fresh_a, size_a]), "never b's, never the run's"
    after = open_pages_after(scope, lists, reported, still_open={size_a})
    assert after == {"a": [size_a], None: [size_b, failed]}, "size_a moved home; b's list not written"
    # A list that held none of the run's keys is not written at all.
    assert open_pages_after(scope, {"a": [fresh_a], None: [size_b]}, reported, set()) == {"a": []}
    # A parent of a fan-out pages nothing: it reads only its own list and adopts nothing.
    assert PageScope(pages=False).lists == (None,)


def test_a_fan_out_parent_pages_its_own_checks_but_not_its_childrens_outcomes():
    child = Finding("child-run", STORE.url, Severity.CRITICAL, "child run x Failed: ...")
    cloud_sql = Finding("cloud-sql-backups", "acme-prod:acme-db", Severity.CRITICAL, "no backup run in 30h")
    parent = PageScope(unpaged_checks=("child-run",))
    assert parent.paged([child, cloud_sql]) == [cloud_sql], "the child paged its own findings"
    assert PageScope(pages=False).paged([child, cloud_sql]) == []
    assert PageScope().paged([child, cloud_sql]) == [child, cloud_sql]


# --- open pages against the harness: the race, and who resolves what --------------------------------

@system_fixture
def receiver():
    """A threaded pytest-httpserver: a handler may wait for a second request to arrive."""
    from pytest_httpserver import HTTPServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def _events(server) -> list[dict]:
    return [json.loads(request.data) for request, _ in server.log if request.path == "/v2/enqueue"]


def _notify_config(server) -> NotifyConfig:
    return NotifyConfig(pagerduty_routing_key_env=PD_ENV, pagerduty_events_url=server.url_for("/v2/enqueue"),
                        timeout="60s")


def _report(duty: str, *findings: Finding) -> Report:
    report = Report(duty=duty, started_at=datetime.now(timezone.utc))
    for finding in findings:
        report.add(finding)
    return report


def _at_once(*calls):
    """Run each call in a thread of its own with a copy of this context (the harness's settings)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        return [future.result(timeout=90) for future in futures]


def test_two_children_paging_at_once_keep_both_pages(prefect_harness, receiver, monkeypatch):
    """Each child's trigger is held until the other's has arrived, so both runs have loaded their
    open pages before either saves: on one list that loses a page (the control), on a list per
    store both are kept."""
    from maint.tasks.notify import notify_report
    from maint.tasks.state import load_open_pages, save_open_pages

    monkeypatch.setenv(PD_ENV, ROUTING_KEY)
    in_flight = threading.Barrier(2, timeout=30)

    def pagerduty(request):
        in_flight.wait()
        return Response('{"status": "success"}', status=202, content_type="application/json")

    receiver.expect_request("/v2/enqueue", method="POST").respond_with_handler(pagerduty)
    config = _notify_config(receiver)

    def child_pages(duty: str, store: str, paging: PageScope):
        finding = Finding("checksum", f"file:///{store}/", CRITICAL, "sha256 mismatch", "restore from another")
        return lambda: notify_report(_report(duty, finding), config, None, paging)

    one_list = f"race-one-list-{uuid.uuid4().hex[:8]}"
    save_open_pages(one_list, [])  # there already (else both would create it, and one be refused)
    _at_once(child_pages(one_list, "a", PageScope()), child_pages(one_list, "b", PageScope()))
    assert len(_events(receiver)) == 2
    assert len(load_open_pages(one_list)) == 1, "the control: one list, both loaded before either saved"

    in_flight.reset()
    per_store = f"race-per-store-{uuid.uuid4().hex[:8]}"
    _at_once(child_pages(per_store, "a", PageScope("a", (None,))), child_pages(per_store, "b", PageScope("b", (None,))))
    assert load_open_pages(per_store, "a") == [dedup_key(per_store, "checksum", "file:///a/")]
    assert load_open_pages(per_store, "b") == [dedup_key(per_store, "checksum", "file:///b/")]
    assert load_open_pages(per_store) == []


def test_a_run_of_one_store_resolves_only_that_stores_pages(prefect_harness, receiver, monkeypatch):
    from maint.tasks.notify import notify_report, notify_run_failure
    from maint.tasks.state import load_open_pages, save_open_pages

    monkeypatch.setenv(PD_ENV, ROUTING_KEY)
    receiver.expect_request("/v2/enqueue", method="POST").respond_with_json({"status": "success"}, status=202)
    config = _notify_config(receiver)
    duty = f"bv-{uuid.uuid4().hex[:8]}"
    a, b = "file:///a/", "file:///b/"
    fresh_a, size_a, fresh_b, size_b = (dedup_key(duty, c, s) for s in (a, b) for c in ("freshness", "size"))
    failed = dedup_key(duty, RUN_FAILED_CHECK, duty)
    save_open_pages(duty, [fresh_a], "a")  # yesterday's children
    save_open_pages(duty, [fresh_b], "b")
    save_open_pages(duty, sorted([size_a, size_b]), None)  # the day before, a run of every store

    def all_fine(*stores: str) -> Report:
        return _report(duty, *(Finding(check, store, OK, "fine") for store in stores for check in ("freshness", "size")))

    def resolved() -> set[str]:
        keys = {e["dedup_key"] for e in _events(receiver) if e["event_action"] == "resolve"}
        receiver.clear_log()
        return keys

    # Store a alone: its own page and the one a run of every store left for it; nothing of b's.
    notify_report(all_fine(a), config, None, PageScope("a", (None,)))
    assert resolved() == {fresh_a, size_a}
    assert (load_open_pages(duty, "a"), load_open_pages(duty, "b"), load_open_pages(duty)) == ([], [fresh_b], [size_b])

    # A run of store a fails before it reports: the page is a's; a run of every store leaves it,
    # and takes over what b's children and its own earlier runs left.
    notify_run_failure(duty, config, "flow run x crashed", None, scope="a")
    assert load_open_pages(duty, "a") == [failed] and load_open_pages(duty) == [size_b]
    notify_report(all_fine(a, b), config, None, PageScope(None, ("a", "b")))
    assert resolved() == {fresh_b, size_b}
    assert (load_open_pages(duty, "a"), load_open_pages(duty, "b"), load_open_pages(duty)) == ([failed], [], [])

    # The next run of store a completes: its failure page is resolved.
    notify_report(all_fine(a), config, None, PageScope("a", (None,)))
    assert resolved() == {failed}
    assert load_open_pages(duty, "a") == []


@pytest.fixture(scope="module")
def made_backup(pg, prefect_harness, tmp_path_factory) -> Path:
    """A directory holding one backup (and its manifest) made by maint's own backup duty."""
    from maint.flows.backup import backup

    store = tmp_path_factory.mktemp("made")
    config = write_config(tmp_path_factory.mktemp("cfg") / "maint.toml", pg, f"file://{store}/")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_PASSWORD_ENV, pg.password)
        assert backup(config_path=str(config))["status"] == "ok"
    return store


def test_fan_out_outside_a_deployment_verifies_every_store_here(pg, db_password, prefect_harness, made_backup,
                                                                tmp_path):
    from maint.flows.backup_verification import backup_verification

    stores = _two_stores(tmp_path, made_backup)
    config = write_config(tmp_path / "maint.toml", pg, stores[0].as_uri() + "/", more_stores=_second_store(stores[1]))

    report = backup_verification(config_path=str(config), fan_out=True)

    assert report["status"] == "ok", report
    assert report["details"]["fan_out"] == ("not fanned out: this run belongs to no deployment, so its 2 stores "
                                            "were verified in this run")
    assert {f["subject"] for f in report["findings"]} == {s.as_uri() + "/" for s in stores}
    assert "child-run" not in {f["check"] for f in report["findings"]}


def _two_stores(tmp_path: Path, made: Path) -> list[Path]:
    stores = [tmp_path / "prod-dumps", tmp_path / "replica-dumps"]
    for store in stores:
        shutil.copytree(made, store)
    return stores


def _second_store(path: Path) -> str:
    return f'\n[[backup_stores]]\nname = "replica-dumps"\nurl = "{path.as_uri()}/"\ndatabase = "prod"\n'


# --- the whole fan-out: a process pool, maint deploy, a long-running worker ---------------------------

@pytest.fixture
def work_pool(prefect_server):
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"maint-fan-out-{uuid.uuid4().hex[:8]}"
    with prefect_api(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    yield name
    forget_maint(prefect_server)


@contextlib.contextmanager
def worker(server, pool: str, env: dict[str, str], log: Path):
    """`prefect worker start --pool POOL`, polling every second, until the block ends: it also
    runs the child runs the parent creates after it started (a --run-once worker would not)."""
    from maint.tasks.prefect_server import prefect_program

    with log.open("w") as out:
        process = subprocess.Popen([prefect_program(), "worker", "start", "--pool", pool], stdout=out,
                                   stderr=subprocess.STDOUT, env={**server.client_env({**os.environ, **env}),
                                                                  "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        yield process
    finally:
        interrupt(process)


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_two_stores_run_as_two_concurrent_child_runs_each_paging_its_own(prefect_server, work_pool, receiver, pg,
                                                                         db_password, tmp_path):
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterKey, FlowRunFilter,
                                                FlowRunFilterId, FlowRunFilterParentFlowRunId)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from maint.tasks.state import load_open_pages, save_open_pages

    events: list[dict] = []
    slack: list[dict] = []
    # While `hold` is set, each resolve waits until the other child's has arrived: both children
    # are then Running at the same moment, or the barrier breaks and the test says so.
    hold = threading.Event()
    both_resolving = threading.Barrier(2, timeout=90)

    def pagerduty(request):
        event = request.get_json()
        events.append(event)
        if hold.is_set() and event["event_action"] == "resolve":
            both_resolving.wait()
        return Response('{"status": "success"}', status=202, content_type="application/json")

    receiver.expect_request("/v2/enqueue", method="POST").respond_with_handler(pagerduty)
    receiver.expect_request("/slack", method="POST").respond_with_handler(
        lambda request: (slack.append(request.get_json()), Response("ok", 200))[1])
    env = {DB_PASSWORD_ENV: db_password, PD_ENV: ROUTING_KEY, SLACK_ENV: receiver.url_for("/slack")}
    notify = (f'pagerduty_routing_key_env = "{PD_ENV}"\npagerduty_events_url = "{receiver.url_for("/v2/enqueue")}"\n'
              f'slack_webhook_url_env = "{SLACK_ENV}"\ntimeout = "120s"')
    prod, replica = tmp_path / "prod-dumps", tmp_path / "replica-dumps"
    prod.mkdir()
    config = write_config(tmp_path / "maint.toml", pg, f"{prod.as_uri()}/", notify=notify,
                          more_stores=_second_store(replica), extra="\n[dead_mans_switch]\nenabled = false\n")
    urls = {"prod-dumps": f"{prod.as_uri()}/", "replica-dumps": f"{replica.as_uri()}/"}
    made = maint_process(prefect_server, "--config", str(config), "run", "backup", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    shutil.copytree(prod, replica)
    deployed = maint_process(prefect_server, "--config", str(config), "deploy", "--pool", work_pool, env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with prefect_api(prefect_server) as client:
        deployment = client.read_deployment_by_name(f"{DUTY}/{DUTY}")
    assert deployment.global_concurrency_limit is None, "not one at a time: the children run side by side"
    # Yesterday each store's child paged a stale backup; today's children each resolve their own.
    stale = {name: dedup_key(DUTY, "freshness", url) for name, url in urls.items()}
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        for name, key in stale.items():
            save_open_pages(DUTY, [key], name)

    def fan_out(log: Path):
        with prefect_api(prefect_server) as client:
            parent = client.create_flow_run_from_deployment(deployment.id, parameters={"fan_out": True})

        def finished():
            with prefect_api(prefect_server) as client:
                run = client.read_flow_run(parent.id)
            return run if run.state.is_final() else None

        parent = wait_for(finished, timeout=300, what=lambda: f"the parent run to end; worker:\n{log.read_text()}")
        with prefect_api(prefect_server) as client:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
            ids = [parent.id, *(c.id for c in children)]
            findings = {a.flow_run_id: json.loads(a.data) for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{DUTY}-findings"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))}
            states = {c.parameters["store"]: sorted(client.read_flow_run_states(c.id), key=lambda s: s.timestamp)
                      for c in children}
        assert sorted(c.parameters["store"] for c in children) == sorted(urls), children
        assert all(c.deployment_id == deployment.id and c.parameters["fan_out"] is False for c in children)
        return parent, {c.parameters["store"]: c for c in children}, findings, states

    events.clear()
    with worker(prefect_server, work_pool, {"MAINT_CONFIG": str(config), **env}, tmp_path / "worker.log"):
        hold.set()
        parent, children, findings, states = fan_out(tmp_path / "worker.log")
        hold.clear()

        # Both Completed, at the same time: each started Running before the other ended.
        assert parent.state.is_completed(), (parent.state, (tmp_path / "worker.log").read_text())
        assert all(c.state.is_completed() for c in children.values()), children
        assert not both_resolving.broken, "the children never resolved at the same time"
        (a_start, a_end), (b_start, b_end) = (
            (next(s.timestamp for s in history if s.is_running()), history[-1].timestamp)
            for history in states.values())
        assert a_start < b_end and b_start < a_end, states
        by_store = {f["subject"]: f for f in findings[parent.id]}
        assert set(by_store) == set(urls.values()) and {f["check"] for f in by_store.values()} == {"child-run"}
        assert all(f["severity"] == "ok" for f in by_store.values()), by_store
        assert all(children[name].name in by_store[url]["message"] for name, url in urls.items())
        assert sorted((e["event_action"], e["dedup_key"]) for e in events) == sorted(
            ("resolve", key) for key in stale.values()), "each child resolved its own store's page"
        assert slack == [], "all ok: nobody posts"

        # One store's backup rots: its child is critical and pages; the parent reports it, pages nothing.
        events.clear()
        [dump] = replica.glob("*.dump")
        _flip_middle_byte(dump)
        parent, children, findings, states = fan_out(tmp_path / "worker.log")

    assert parent.state.is_failed() and parent.state.message.startswith(f"{DUTY}: CRITICAL (1 ok, 1 critical)"), \
        parent.state
    by_store = {f["subject"]: f for f in findings[parent.id]}
    assert (by_store[urls["prod-dumps"]]["severity"], by_store[urls["replica-dumps"]]["severity"]) == ("ok", "critical")
    assert children["replica-dumps"].state.is_failed() and children["prod-dumps"].state.is_completed()
    child_critical = {dedup_key(DUTY, f["check"], f["subject"]) for f in findings[children["replica-dumps"].id]
                      if f["severity"] == "critical"}
    triggers = [e for e in events if e["event_action"] == "trigger"]
    assert child_critical and {e["dedup_key"] for e in triggers} == child_critical, events
    assert all(e["payload"]["component"] == urls["replica-dumps"] for e in triggers)
    assert "child-run" not in {e["payload"]["class"] for e in triggers}, "the parent paged nothing again"
    assert len(triggers) == len(child_critical) and events == triggers
    texts = [message["text"] for message in slack]
    assert len(texts) == 2 and all(f"maint {DUTY}: CRITICAL" in text for text in texts), texts
    assert sum("child-run" in text for text in texts) == 1, "one summary from the parent, one report from the child"
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        assert load_open_pages(DUTY, "replica-dumps") == sorted(child_critical)
        assert load_open_pages(DUTY, "prod-dumps") == [] and load_open_pages(DUTY) == []
        save_open_pages(DUTY, [], "replica-dumps")  # the shared server's next test starts clean
