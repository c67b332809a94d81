"""Who gets paged: dedup keys and the trigger/resolve plan."""

import json

import pytest

from maint.paging import PagePlan, dedup_key, plan_pages
from maint.report import Finding, Severity

OK, WARNING, CRITICAL = Severity.OK, Severity.WARNING, Severity.CRITICAL


def finding(severity: Severity, check: str = "backup.age", subject: str = "prod-dumps") -> Finding:
    return Finding(check, subject, severity, f"{check} on {subject} is {severity.value}")


def key(check: str = "backup.age", subject: str = "prod-dumps", duty: str = "backup-verification") -> str:
    return dedup_key(duty, check, subject)


# --- dedup_key -----------------------------------------------------------------------------------

def test_dedup_key_is_stable():
    assert dedup_key("backup", "backup.age", "prod-dumps") == dedup_key("backup", "backup.age", "prod-dumps")
    # pinned: a key that changed between releases would leave old incidents open forever
    assert dedup_key("backup", "backup.age", "prod") == "maint-backup-backup.age-493f5a4fc134ba9c1dbe"


@pytest.mark.parametrize("other", [
    ("vacuum", "backup.age", "prod-dumps"),
    ("backup", "backup.size", "prod-dumps"),
    ("backup", "backup.age", "prod-dumps-2"),
    ("backup", "backup.agep", "rod-dumps"),  # the separator keeps the parts apart
    ("backup", "backup.ag", "eprod-dumps"),
])
def test_dedup_key_is_distinct_per_triple(other):
    assert dedup_key(*other) != dedup_key("backup", "backup.age", "prod-dumps")


@pytest.mark.parametrize("duty, check, subject", [
    ("backup", "backup.age", "prod-dumps"),
    ("health-check", "sql", "orders without a delivery date"),
    ("health-check", "endpoint", "https://user:hunter2secret@api.example.com/health?token=abcdef"),
    ("cert-check", "expiry", "x" * 5000),
])
def test_dedup_key_shape(duty, check, subject):
    k = dedup_key(duty, check, subject)
    assert k.startswith("maint-")
    assert len(k) < 255
    assert subject not in k
    assert k.startswith(f"maint-{duty}-{check}-")


# --- plan_pages ----------------------------------------------------------------------------------

def test_critical_triggers_and_opens():
    f = finding(CRITICAL)
    plan = plan_pages("backup-verification", [f], [], ["critical"])
    assert plan == PagePlan(triggers=[(key(), f)], resolves=[], still_open=[key()])


def test_critical_already_open_triggers_again_and_stays_open():
    f = finding(CRITICAL)
    plan = plan_pages("backup-verification", [f], [key()], ["critical"])
    assert plan == PagePlan(triggers=[(key(), f)], resolves=[], still_open=[key()])


@pytest.mark.parametrize("severity", [WARNING, OK])
def test_below_page_on_does_not_trigger(severity):
    plan = plan_pages("backup-verification", [finding(severity)], [], ["critical"])
    assert plan == PagePlan(triggers=[], resolves=[], still_open=[])


@pytest.mark.parametrize("severity", [OK, WARNING], ids=["ok", "drops-to-warning"])
def test_open_key_resolves_when_below_page_on(severity):
    f = finding(severity)
    plan = plan_pages("backup-verification", [f], [key()], ["critical"])
    assert plan == PagePlan(triggers=[], resolves=[(key(), f)], still_open=[])


def test_open_key_without_a_finding_stays_open():
    other = finding(OK, check="backup.size")
    plan = plan_pages("backup-verification", [other], [key()], ["critical"])
    assert plan == PagePlan(triggers=[], resolves=[], still_open=[key()])


def test_no_findings_keeps_everything_open():
    keys = [key(), key(check="backup.size")]
    assert plan_pages("backup-verification", [], keys, ["critical"]).still_open == sorted(keys)


@pytest.mark.parametrize("severity, triggers", [(OK, False), (WARNING, True), (CRITICAL, True)])
def test_page_on_warning_and_critical(severity, triggers):
    f = finding(severity)
    plan = plan_pages("backup-verification", [f], [], ["warning", "critical"])
    assert plan.triggers == ([(key(), f)] if triggers else [])
    assert plan.still_open == ([key()] if triggers else [])


def test_other_duties_keys_are_not_resolved():
    """Same check and subject under another duty is another incident."""
    other_duty_key = key(duty="backup")
    plan = plan_pages("backup-verification", [finding(OK)], [other_duty_key], ["critical"])
    assert plan == PagePlan(triggers=[], resolves=[], still_open=[other_duty_key])


def test_mixed_run():
    age, size, count = finding(CRITICAL), finding(OK, check="backup.size"), finding(WARNING, check="backup.count")
    stale = key(check="backup.manifest")
    plan = plan_pages("backup-verification", [age, size, count], [key(check="backup.size"), stale], ["critical"])
    assert plan.triggers == [(key(), age)]
    assert plan.resolves == [(key(check="backup.size"), size)]
    assert plan.still_open == sorted([key(), stale])


def test_exhaustive_check_resolves_open_pages_whose_subject_is_gone():
    """Pods: only bad pods are reported. A pod paged yesterday and absent today is fine (or gone)."""
    yesterday = dedup_key("health-check", "pods", "shop/web-1")
    still_bad = dedup_key("health-check", "pods", "shop/web-2")
    other_check = dedup_key("health-check", "endpoint", "https://x/health")
    bad = Finding("pods", "shop/web-2", CRITICAL, "CrashLoopBackOff")
    plan = plan_pages("health-check", [bad], [yesterday, still_bad, other_check], ["critical"],
                      frozenset({"pods"}))
    assert plan.resolves == [(yesterday, None)]
    assert plan.still_open == sorted([still_bad, other_check])


def test_without_exhaustive_checks_absent_subjects_stay_open():
    yesterday = dedup_key("health-check", "pods", "shop/web-1")
    plan = plan_pages("health-check", [], [yesterday], ["critical"])
    assert plan.resolves == [] and plan.still_open == [yesterday]


# --- open pages kept in Prefect Variables ---------------------------------------------------------

def _keys(count: int) -> list[str]:
    return sorted(dedup_key("health-check", "pods", f"shop/web-{i}") for i in range(count))


def test_open_pages_pack_into_shards_prefect_accepts():
    from maint.tasks.state import SHARD_CHARS, pack_open_pages

    assert pack_open_pages([]) == [[]]
    shards = pack_open_pages(_keys(300))
    assert len(shards) == 4 and [k for shard in shards for k in shard] == _keys(300)
    assert all(len(json.dumps(shard)) <= SHARD_CHARS < 5000 for shard in shards)


def test_a_large_incident_keeps_every_open_page(prefect_harness):
    """Prefect caps one Variable at 5,000 characters, about 100 keys: 300 must all come back."""
    from maint.tasks.state import load_open_pages, save_open_pages

    save_open_pages("health-check", _keys(300))
    assert load_open_pages("health-check") == _keys(300)
    # The incident ends: shards left from the longer list are never read again.
    save_open_pages("health-check", _keys(2))
    assert load_open_pages("health-check") == _keys(2)
    save_open_pages("health-check", [])
    assert load_open_pages("health-check") == []
