"""Velero's backups: the pure decision over velero.io/v1 JSON with a fixed `now`, every rule failing
for its reason and resolved by the next healthy state; and `list_velero_objects` with the real
kubernetes client against the local API server serving Velero's custom objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from maint.config import VeleroConfig
from maint.errors import KubernetesError
from maint.paging import plan_pages
from maint.report import Finding, Severity
from maint.velero import VELERO_CHECKS, assess_velero, backup_from_json
from tests.k8s_server import NOW, Role, ago, velero_backup, velero_location, velero_schedule, write_kubeconfig

OK, WARNING, CRITICAL = Severity.OK, Severity.WARNING, Severity.CRITICAL
CONFIG = VeleroConfig(namespace="velero", rpo=timedelta(hours=26), in_progress_limit=timedelta(hours=4))
NS = "velero velero"  # the namespace-wide subject
DAILY = "velero velero/schedule daily"
DEFAULT = "velero velero/location default"


def daily(stamp: str, phase: str = "Completed", *, hours_ago: float = 8, took: float = 0.5, **more) -> dict:
    """A backup of the `daily` schedule, named as Velero names it, finished `hours_ago`."""
    return velero_backup(f"daily-{stamp}", phase, started=ago(hours=hours_ago + took), completed=ago(hours=hours_ago),
                         schedule="daily", **more)


def healthy_backups() -> list[dict]:
    return [daily("20250313010000", hours_ago=32), daily("20250314010000")]


def healthy_schedules() -> list[dict]:
    return [velero_schedule("daily", last_backup=ago(hours=8, minutes=30))]


def running(name: str, phase: str = "InProgress", **started) -> dict:
    """A backup of the `daily` schedule that started `started` ago and has not finished."""
    return velero_backup(name, phase, started=ago(**started), completed=None, schedule="daily")


@dataclass
class Case:
    """A state of the namespace, what the decision must say about it, and the next state that is
    healthy again (by default the everyday healthy one), which must resolve every page it opened."""

    id: str
    expected: list[tuple[str, str, Severity, str]]  # (check, subject, severity, text in the message)
    backups: list[dict] = field(default_factory=healthy_backups)
    locations: list[dict] = field(default_factory=lambda: [velero_location()])
    schedules: list[dict] = field(default_factory=healthy_schedules)
    config: VeleroConfig = CONFIG
    fixed: dict = field(default_factory=dict)  # overrides of the healthy state for the next run

    def findings(self) -> list[Finding]:
        return assess_velero(self.config, self.backups, self.locations, self.schedules, NOW)

    def next_run(self) -> list[Finding]:
        healthy = Case("healthy", [])
        state = {"backups": healthy.backups, "locations": healthy.locations, "schedules": healthy.schedules}
        state |= self.fixed
        return assess_velero(self.config, state["backups"], state["locations"], state["schedules"], NOW)


CASES = [
    Case("healthy", [("velero-backup", NS, OK, "newest Completed backup velero velero/daily-20250314010000 "
                      "finished 8h ago (RPO 1d2h)"),
                     ("velero-latest", DAILY, OK, "daily-20250314010000 Completed 8h ago"),
                     ("velero-latest", NS, OK, "no finished backup without a schedule yet"),
                     ("velero-in-progress", NS, OK, "no backup running longer than 4h (0 running)"),
                     ("velero-location", DEFAULT, OK, "Available (bucket acme-velero, the default; last validated 40s"),
                     ("velero-location", NS, OK, "1 storage locations, 1 Available"),
                     ("velero-schedule", DAILY, OK, "Enabled, cron '0 1 * * *', last backup 8h30m ago"),
                     ("velero-schedule", NS, OK, "1 schedules, 0 flagged")]),
    Case("stale", [("velero-backup", NS, CRITICAL, "newest Completed backup velero velero/daily-20250313010000 "
                    "finished 1d6h ago; RPO is 1d2h"),
                   ("velero-schedule", DAILY, WARNING, "last backup created 1d6h ago, more than the RPO 1d2h")],
         backups=[daily("20250313010000", hours_ago=30)],
         schedules=[velero_schedule("daily", last_backup=ago(hours=30, minutes=30))]),
    Case("rpo-boundary-is-ok", [("velero-backup", NS, OK, "finished 1d2h ago (RPO 1d2h)")],
         backups=[daily("20250313073000", hours_ago=26)]),
    Case("none-completed", [("velero-backup", NS, CRITICAL, "no Completed backup in namespace velero "
                             "(backups: 1 Failed, 1 InProgress); RPO is 1d2h"),
                            ("velero-latest", DAILY, CRITICAL, "Failed 8h ago: failureReason: rpc error")],
         backups=[daily("20250314010000", "Failed", failure_reason="rpc error"),
                  running("daily-20250314090000", minutes=30)]),
    Case("no-backup-at-all", [("velero-backup", NS, CRITICAL, "(backups: none at all)")], backups=[]),
    Case("expired-completed-does-not-count", [("velero-backup", NS, CRITICAL, "no Completed backup")],
         backups=[daily("20250314010000", expiration=ago(minutes=5))]),
    Case("partially-failed", [("velero-latest", DAILY, WARNING, "newest finished backup schedule daily: velero "
                               "velero/daily-20250314010000 PartiallyFailed 8h ago: 2 errors, 5 warnings"),
                              ("velero-backup", NS, OK, "daily-20250313010000 finished 20h ago")],
         backups=[daily("20250313010000", hours_ago=20),
                  daily("20250314010000", "PartiallyFailed", errors=2, warnings=5)]),
    Case("failed-with-reason", [("velero-latest", DAILY, CRITICAL, "daily-20250314010000 Failed 8h ago: failureReason: "
                                 "rpc error: code = Unavailable desc = error reading from server: EOF")],
         backups=[daily("20250313010000", hours_ago=20),
                  daily("20250314010000", "Failed",
                        failure_reason="rpc error: code = Unavailable desc = error reading from server: EOF")]),
    Case("failed-validation", [("velero-latest", DAILY, CRITICAL, "daily-20250314010000 FailedValidation 8h ago: "
                                "validationErrors: an existing backup storage location was not specified at backup "
                                "creation time and the default BackupStorageLocation could not be found")],
         backups=[daily("20250313010000", hours_ago=20),
                  velero_backup("daily-20250314010000", "FailedValidation", started=None, completed=None,
                                created=ago(hours=8), schedule="daily", validation_errors=(
                                    "an existing backup storage location was not specified at backup creation time "
                                    "and the default BackupStorageLocation could not be found",))]),
    Case("snapshots-not-all-completed", [("velero-latest", DAILY, WARNING, "Completed 8h ago: 1 of 2 volume snapshots "
                                          "completed")],
         backups=[daily("20250314010000", volume_snapshots=(2, 1))]),
    Case("csi-snapshots-not-all-completed",
         [("velero-latest", DAILY, WARNING, "2 of 3 CSI volume snapshots completed")],
         backups=[daily("20250314010000", csi_snapshots=(3, 2))]),
    Case("item-operations-failed", [("velero-latest", DAILY, WARNING, "3 of 4 backup item operations completed, "
                                     "1 failed")],
         backups=[daily("20250314010000", item_operations=(4, 3, 1))]),
    Case("hooks-failed", [("velero-latest", DAILY, WARNING, "1 of 6 hooks failed")],
         backups=[daily("20250314010000", hooks=(6, 1))]),
    Case("all-counts-complete", [("velero-latest", DAILY, OK, "Completed 8h ago")],
         backups=[daily("20250314010000", volume_snapshots=(2, 2), csi_snapshots=(3, 3), item_operations=(4, 4, 0),
                        hooks=(6, 0))]),
    Case("failed-then-completed-is-ok", [("velero-latest", DAILY, OK, "daily-20250314010000 Completed")],
         backups=[daily("20250313010000", "Failed", hours_ago=20), daily("20250314010000")]),
    Case("failed-validation-newer-than-a-completed", [("velero-latest", DAILY, CRITICAL, "FailedValidation 1h ago")],
         backups=[daily("20250314010000"),
                  velero_backup("daily-20250314080000", "FailedValidation", started=None, completed=None,
                                created=ago(hours=1), schedule="daily", validation_errors=("bad",))]),
    Case("an-hourly-success-does-not-hide-the-daily-failure",
         [("velero-latest", DAILY, CRITICAL, "Failed"),
          ("velero-latest", "velero velero/schedule hourly", OK, "hourly-20250314090000 Completed 20m ago")],
         backups=[daily("20250313010000", hours_ago=20), daily("20250314010000", "Failed", failure_reason="x"),
                  velero_backup("hourly-20250314090000", "Completed", started=ago(minutes=25),
                                completed=ago(minutes=20), schedule="hourly")],
         schedules=[velero_schedule("daily", last_backup=ago(hours=8, minutes=30)),
                    velero_schedule("hourly", cron="0 * * * *", last_backup=ago(minutes=25))],
         fixed={"schedules": [velero_schedule("daily", last_backup=ago(hours=8, minutes=30)),
                              velero_schedule("hourly", cron="0 * * * *", last_backup=ago(minutes=25))]}),
    Case("manual-backup-failed", [("velero-latest", NS, CRITICAL, "newest finished backup without a schedule: velero "
                                   "velero/before-upgrade Failed 2h ago: failureReason: none given")],
         backups=healthy_backups() + [velero_backup("before-upgrade", "Failed", started=ago(hours=2, minutes=5),
                                                    completed=ago(hours=2))],
         fixed={"backups": healthy_backups() + [velero_backup(
             "before-upgrade-2", "Completed", started=ago(hours=1, minutes=5), completed=ago(hours=1))]}),
    Case("backup-of-a-deleted-schedule-counts-as-unscheduled",
         [("velero-latest", NS, WARNING, "velero velero/weekly-20250309000000 PartiallyFailed")],
         backups=healthy_backups() + [velero_backup("weekly-20250309000000", "PartiallyFailed", started=ago(days=5),
                                                    completed=ago(days=4, hours=23), schedule="weekly", errors=1)]),
    Case("location-unavailable",
         [("velero-location", DEFAULT, CRITICAL, "Unavailable: BackupStorageLocation \"default\" is unavailable: "
           "rpc error: code = Unknown desc = storage: bucket doesn't exist (bucket acme-velero, the default; last "
           "validated 40s ago)"),
          ("velero-location", NS, OK, "1 storage locations, 0 Available")],
         locations=[velero_location(phase="Unavailable", message="BackupStorageLocation \"default\" is unavailable: "
                                    "rpc error: code = Unknown desc = storage: bucket doesn't exist")]),
    Case("location-not-validated-yet", [("velero-location", DEFAULT, CRITICAL, "not validated yet (no phase): no "
                                         "message (bucket acme-velero/cluster-a, the default; never validated)")],
         locations=[velero_location(phase=None, prefix="cluster-a")]),
    Case("second-location-unavailable", [("velero-location", "velero velero/location dr", CRITICAL, "Unavailable"),
                                         ("velero-location", DEFAULT, OK, "Available")],
         locations=[velero_location(), velero_location("dr", "Unavailable", default=False, bucket="acme-dr")],
         fixed={"locations": [velero_location(), velero_location("dr", default=False, bucket="acme-dr")]}),
    Case("no-location", [("velero-location", NS, CRITICAL, "no BackupStorageLocation in namespace velero: Velero has "
                          "nowhere to write backups")], locations=[]),
    Case("no-default-location", [("velero-location", NS, WARNING, "1 storage locations, none the default")],
         locations=[velero_location(default=False)]),
    Case("schedule-paused", [("velero-schedule", DAILY, WARNING, "paused: it creates no backups"),
                             ("velero-schedule", NS, OK, "1 schedules, 1 flagged")],
         schedules=[velero_schedule("daily", paused=True, last_backup=ago(hours=8, minutes=30))]),
    Case("schedule-failed-validation", [("velero-schedule", DAILY, CRITICAL, "FailedValidation: invalid schedule: "
                                         "expected exactly 5 fields, found 4: [0 1 * *]")],
         schedules=[velero_schedule("daily", cron="0 1 * *", phase="FailedValidation",
                                    validation_errors=(
                                        "invalid schedule: expected exactly 5 fields, found 4: [0 1 * *]",))]),
    Case("schedule-paused-and-stale", [("velero-schedule", DAILY, WARNING, "paused: it creates no backups; last backup "
                                        "created 3d ago, more than the RPO 1d2h")],
         schedules=[velero_schedule("daily", paused=True, last_backup=ago(days=3))]),
    Case("schedule-never-ran", [("velero-schedule", DAILY, WARNING, "no backup created since the schedule was 2d ago")],
         schedules=[velero_schedule("daily", created=ago(days=2))]),
    Case("new-schedule-not-due-yet", [("velero-schedule", DAILY, OK, "Enabled, cron '0 1 * * *', no backup yet")],
         schedules=[velero_schedule("daily", created=ago(hours=2))]),
    Case("named-schedule-missing", [("velero-schedule", "velero velero/schedule weekly", CRITICAL, "Schedule weekly "
                                     "does not exist in namespace velero ([velero].schedules names it)"),
                                    ("velero-latest", "velero velero/schedule weekly", OK, "no finished backup")],
         config=VeleroConfig(namespace="velero", schedules=["daily", "weekly"]),
         fixed={"schedules": [velero_schedule("daily", last_backup=ago(hours=8, minutes=30)),
                              velero_schedule("weekly", cron="0 3 * * 0", last_backup=ago(hours=20))]}),
    Case("named-schedules-alone-keep-fresh",
         [("velero-backup", NS, CRITICAL, "newest Completed backup of schedules daily velero "
                                          "velero/daily-20250313010000 finished 1d8h ago")],
         config=VeleroConfig(namespace="velero", schedules=["daily"]),
         backups=[daily("20250313010000", hours_ago=32),
                  velero_backup("dev-20250314090000", "Completed", started=ago(minutes=50), completed=ago(minutes=40),
                                schedule="dev")],
         schedules=[velero_schedule("daily", last_backup=ago(hours=8)),
                    velero_schedule("dev", last_backup=ago(hours=1))]),
    Case("no-schedule-at-all", [("velero-schedule", NS, WARNING, "no Schedule in namespace velero: backups are made "
                                 "only by hand")], schedules=[]),
    Case("stuck-in-progress", [("velero-in-progress", NS, WARNING, "1 backup(s) running longer than in_progress_limit "
                                "4h: velero velero/daily-20250314030000 InProgress for 6h30m")],
         backups=healthy_backups() + [running("daily-20250314030000", hours=6, minutes=30)]),
    Case("stuck-waiting-for-plugins-and-new", [("velero-in-progress", NS, WARNING, "2 backup(s) running longer than "
                                                "in_progress_limit 4h: velero velero/manual-1 New for 1d, velero "
                                                "velero/daily-20250314030000 WaitingForPluginOperations for 5h")],
         backups=healthy_backups() + [
             running("daily-20250314030000", "WaitingForPluginOperations", hours=5),
             velero_backup("manual-1", "New", started=None, completed=None, created=ago(days=1))]),
    Case("in-progress-within-the-limit",
         [("velero-in-progress", NS, OK, "no backup running longer than 4h (1 running)")],
         backups=healthy_backups() + [running("daily-20250314060000", hours=3, minutes=30)]),
    Case("deleting-is-neither-running-nor-finished", [("velero-in-progress", NS, OK, "(0 running)"),
                                                       ("velero-latest", DAILY, OK, "daily-20250314010000 Completed")],
         backups=healthy_backups() + [velero_backup("daily-20250314080000", "Deleting", started=ago(days=31),
                                                    completed=ago(days=31), schedule="daily")]),
]
BY_ID = {case.id: case for case in CASES}


def by_key(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    return {(f.check, f.subject): f for f in findings}


def assert_expected(case: Case, findings: list[Finding]) -> None:
    found = by_key(findings)
    for check, subject, severity, text in case.expected:
        finding = found.get((check, subject))
        assert finding is not None, f"no {check} finding for {subject}: {sorted(found)}"
        assert (finding.severity, text in finding.message) == (severity, True), finding
    # Nothing else is wrong: each case breaks only what it lists.
    listed = {(check, subject) for check, subject, severity, _ in case.expected if severity is not OK}
    assert {k for k, f in found.items() if f.severity is not OK} == listed


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_rule(case):
    assert_expected(case, case.findings())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_page_is_resolved_by_the_next_healthy_run(case):
    """Paging's invariant: every subject reports once per run, and its healthy state emits the
    same check and subject as OK, so the page the failure opened is resolved."""
    findings = case.findings()
    assert len(by_key(findings)) == len(findings), "a check reported one subject twice"
    assert {f.check for f in findings} == VELERO_CHECKS
    opened = plan_pages("backup-verification", findings, [], ["warning", "critical"])
    healthy = case.next_run()
    assert all(f.severity is OK for f in healthy), [f for f in healthy if f.severity is not OK]
    after = plan_pages("backup-verification", healthy, [key for key, _ in opened.triggers], ["warning", "critical"])
    assert after.still_open == [] and len(after.resolves) == len(opened.triggers)


def test_every_problem_names_its_object_and_the_next_step():
    for case in CASES:
        for finding in case.findings():
            assert finding.subject.startswith("velero velero")
            if finding.severity is not OK:
                assert finding.hint, finding
                assert "velero " in finding.hint or "kubectl " in finding.hint, finding


def test_hints_are_velero_commands():
    def hint(case_id: str, check: str, subject: str) -> str:
        return by_key(BY_ID[case_id].findings())[(check, subject)].hint

    assert hint("partially-failed", "velero-latest", DAILY).startswith(
        "velero backup logs daily-20250314010000 -n velero | grep -iE 'level=(error|warn)'; "
        "velero backup describe daily-20250314010000 --details -n velero;")
    assert hint("failed-with-reason", "velero-latest", DAILY) == (
        "velero backup logs daily-20250314010000 -n velero; velero backup describe daily-20250314010000 --details "
        "-n velero; the schedule's next backup that completes resolves this")
    assert "velero backup delete before-upgrade -n velero once it is understood" in hint(
        "manual-backup-failed", "velero-latest", NS)
    assert hint("location-unavailable", "velero-location", DEFAULT).startswith("velero backup-location get -n velero;")
    assert hint("schedule-paused", "velero-schedule", DAILY) == "velero schedule unpause daily -n velero"
    assert hint("no-default-location", "velero-location", NS) == (
        "velero backup-location set default --default -n velero")
    assert hint("stuck-in-progress", "velero-in-progress", NS).startswith(
        "velero backup describe daily-20250314030000 --details -n velero; kubectl -n velero logs deploy/velero | "
        "grep daily-20250314030000")
    assert hint("stale", "velero-backup", NS).startswith("velero backup get -n velero: are the newer ones failing")


def test_another_namespace_is_named_everywhere():
    config = VeleroConfig(namespace="backup-system")
    backup = velero_backup("daily-1", "Failed", started=ago(hours=2), completed=ago(hours=1), schedule="daily",
                           namespace="backup-system")
    findings = assess_velero(config, [backup], [velero_location(namespace="backup-system")],
                             [velero_schedule("daily", namespace="backup-system", last_backup=ago(hours=2))], NOW)
    latest = by_key(findings)[("velero-latest", "velero backup-system/schedule daily")]
    assert latest.severity is CRITICAL and "velero backup-system/daily-1 Failed" in latest.message
    assert "velero backup logs daily-1 -n backup-system" in latest.hint
    assert all(f.subject.startswith("velero backup-system") for f in findings)


def test_the_limit_and_the_rpo_are_parameters_and_now_is_the_only_clock():
    case = BY_ID["in-progress-within-the-limit"]
    tight = VeleroConfig(namespace="velero", in_progress_limit=timedelta(hours=3))
    stuck = by_key(assess_velero(tight, case.backups, case.locations, case.schedules, NOW))
    assert stuck[("velero-in-progress", NS)].severity is WARNING
    later = by_key(assess_velero(CONFIG, case.backups, case.locations, case.schedules, NOW + timedelta(hours=1)))
    assert later[("velero-in-progress", NS)].severity is WARNING
    healthy = BY_ID["healthy"]
    tomorrow = by_key(assess_velero(CONFIG, healthy.backups, healthy.locations, healthy.schedules,
                                    NOW + timedelta(hours=19)))
    assert tomorrow[("velero-backup", NS)].severity is CRITICAL  # 8h + 19h > 26h


def test_backup_json_is_read_with_velero_field_names():
    backup = backup_from_json(velero_backup(
        "daily-20250314010000", "PartiallyFailed", started=ago(hours=9), completed=ago(hours=8), schedule="daily",
        errors=2, warnings=5, volume_snapshots=(3, 2), csi_snapshots=(1, 1), item_operations=(4, 3, 1), hooks=(6, 1),
        storage_location="dr"))
    assert (backup.namespace, backup.name, backup.phase, backup.schedule) == (
        "velero", "daily-20250314010000", "PartiallyFailed", "daily")
    assert (backup.started_at, backup.completed_at, backup.storage_location) == (ago(hours=9), ago(hours=8), "dr")
    assert backup.expires_at == ago(hours=9) + timedelta(days=30)
    assert (backup.errors, backup.warnings) == (2, 5)
    assert (backup.volume_snapshots, backup.csi_snapshots, backup.item_operations, backup.hooks) == (
        (3, 2), (1, 1), (4, 3, 1), (6, 1))
    bare = backup_from_json({"metadata": {"name": "x"}}, "velero")  # a Backup Velero has not seen yet
    assert (bare.namespace, bare.phase, bare.created_at, bare.errors) == ("velero", "", None, 0)


@pytest.mark.parametrize("broken", [{"metadata": {}}, {"metadata": {"name": "x"}, "status": {"errors": "two"}},
                                    {"metadata": {"name": "x"}, "status": {"startTimestamp": "yesterday"}}])
def test_json_that_is_not_a_backup_is_refused(broken):
    with pytest.raises((KeyError, ValueError)):
        backup_from_json(broken, "velero")


# --- with the real client against the API stand-in -----------------------------------------------

TOKEN = "velero-check-token-31f4"
VELERO_READER = Role("system:serviceaccount:maint:maint", {
    plural: frozenset({"get", "list"}) for plural in ("backups", "backupstoragelocations", "schedules")})


@pytest.fixture
def kubeconfig(monkeypatch, tmp_path):
    """Points $KUBECONFIG at a server (call it with the URL and token); no ambient configuration."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def point_at(url: str, token: str = TOKEN) -> None:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (url, token)})))
    return point_at


def serve(kube_api, case: Case, **kwargs):
    return kube_api({}, token=TOKEN, custom_objects=case.backups + case.locations + case.schedules, **kwargs)


SYSTEM_CASES = ["healthy", "stale", "partially-failed", "failed-with-reason", "location-unavailable",
                "schedule-paused", "stuck-in-progress"]


@pytest.mark.parametrize("case_id", SYSTEM_CASES)
def test_listed_through_the_client_and_assessed(kube_api, kubeconfig, case_id):
    from maint.tasks.kubernetes import list_velero_objects

    case = BY_ID[case_id]
    with serve(kube_api, case) as server:
        kubeconfig(server.url)
        listed = list_velero_objects("velero")
    assert [b["metadata"]["name"] for b in listed.backups] == [b["metadata"]["name"] for b in case.backups]
    assert (listed.locations, listed.schedules) == (case.locations, case.schedules)
    assert_expected(case, assess_velero(CONFIG, listed.backups, listed.locations, listed.schedules, NOW))
    lists = server.requests_to("GET", r"/apis/velero\.io/v1/namespaces/velero/\w+")
    assert sorted(r.path.rsplit("/", 1)[1] for r in lists) == ["backups", "backupstoragelocations", "schedules"]
    assert all(r.query.get("limit") == "500" and r.authorization == f"Bearer {TOKEN}" for r in lists)
    assert all(r.user_agent == "maint/backup-verification" for r in lists)


def test_a_role_with_the_velero_rule_is_enough(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    with serve(kube_api, BY_ID["healthy"], roles={"reader-token": VELERO_READER}) as server:
        kubeconfig(server.url, "reader-token")
        listed = list_velero_objects("velero")
    assert len(listed.backups) == 2 and len(listed.locations) == 1 and len(listed.schedules) == 1


def test_thousands_of_backups_are_listed_in_pages(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    hourly = [velero_backup(f"hourly-{i:05d}", "Completed", started=ago(hours=i + 1),
                            completed=ago(hours=i, minutes=50), schedule="hourly") for i in range(1200)]
    case = Case("many", [("velero-backup", NS, OK, "velero velero/hourly-00000 finished 50m ago")], backups=hourly,
                schedules=[velero_schedule("hourly", cron="0 * * * *", last_backup=ago(hours=1))])
    with serve(kube_api, case) as server:
        kubeconfig(server.url)
        listed = list_velero_objects("velero")
    assert [b["metadata"]["name"] for b in listed.backups] == [b["metadata"]["name"] for b in hourly]
    pages = [r.query.get("continue") for r in server.requests_to("GET", r".*/backups")]
    assert pages == [None, "500", "1000"]
    assert_expected(case, assess_velero(CONFIG, listed.backups, listed.locations, listed.schedules, NOW))


def test_velero_not_installed_is_named(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    with kube_api({"velero": []}, token=TOKEN) as server:  # no custom objects: no velero.io CRDs
        kubeconfig(server.url)
        with pytest.raises(KubernetesError) as caught:
            list_velero_objects("velero")
    assert str(caught.value) == (f"Velero's CRDs are not installed on {server.url} (no velero.io/v1 backups; "
                                 "namespace 'velero'): install Velero, or check [velero].context names the cluster "
                                 "it runs in")


def test_forbidden_names_the_missing_rbac_rule(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    no_schedules = Role(VELERO_READER.user, {k: v for k, v in VELERO_READER.rules.items() if k != "schedules"})
    with serve(kube_api, BY_ID["healthy"], roles={"partial-token": no_schedules}) as server:
        kubeconfig(server.url, "partial-token")
        with pytest.raises(KubernetesError) as caught:
            list_velero_objects("velero")
    assert str(caught.value) == (
        f"the Kubernetes API at {server.url} (namespace 'velero') forbids listing Velero's schedules (403 Forbidden): "
        'schedules.velero.io is forbidden: User "system:serviceaccount:maint:maint" cannot list resource "schedules" '
        'in API group "velero.io" in the namespace "velero"; grant a Role rule in namespace \'velero\': apiGroups '
        "[velero.io], resources [backups, backupstoragelocations, schedules], verbs [get, list]")
    assert TOKEN not in str(caught.value) and "partial-token" not in str(caught.value)


def test_unknown_namespace_is_an_error_and_an_empty_one_is_not(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    with kube_api({"backup-system": []}, token=TOKEN, custom_objects=[]) as server:
        kubeconfig(server.url)
        with pytest.raises(KubernetesError) as caught:
            list_velero_objects("veleor")
        empty = list_velero_objects("backup-system")
    assert str(caught.value) == (f"namespace 'veleor' does not exist on {server.url}: check [velero].namespace and "
                                 "[velero].context")
    assert (empty.backups, empty.locations, empty.schedules) == ([], [], [])


def test_an_answer_that_is_not_a_backup_list_is_an_error(kube_api, kubeconfig):
    from maint.tasks.kubernetes import list_velero_objects

    broken = velero_backup("daily-1", "Completed", started=ago(hours=2), completed=ago(hours=1))
    broken["status"]["completionTimestamp"] = "last night"
    with kube_api({}, token=TOKEN, custom_objects=[broken]) as server:
        kubeconfig(server.url)
        with pytest.raises(KubernetesError, match=r"listing velero.io backups in namespace 'velero': the answer is "
                                                  r"not a Velero BackupList \(ValueError"):
            list_velero_objects("velero")


def test_discovery_lists_velero_only_where_it_is_installed(kube_api):
    with kube_api({}, custom_objects=[]) as installed, kube_api({}) as bare:
        groups = [g["name"] for g in installed.answer("/apis", {}, None)[1]["groups"]]
        resources = installed.answer("/apis/velero.io/v1", {}, None)[1]["resources"]
        assert groups == ["batch", "velero.io"]
        assert {r["name"] for r in resources} == {"backups", "backupstoragelocations", "schedules"}
        assert [g["name"] for g in bare.answer("/apis", {}, None)[1]["groups"]] == ["batch"]
        assert bare.answer("/apis/velero.io/v1", {}, None)[0] == 404
