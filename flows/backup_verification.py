"""Duty `backup-verification`: every store's newest backup exists, is fresh, has a sane size and
is intact, checked in one streamed pass.

Runbook, for every [[backup_stores]] entry at once:
  1. list the store's backups and read the newest ones' manifests,
  2. pick the newest by real creation time and judge freshness against the RPO and size against
     the median of its predecessors,
  3. read the newest backup once, start to end: checksums (manifest sha256/crc32c, GCS
     crc32c/md5 pinned to the object's generation, S3's full-object CRC32C pinned to its
     VersionId) and a full read of the archive (pg_restore for custom format, gzip plus
     pg_dump's closing line for .sql.gz) in the same pass.
Beside the stores, at the same time: every [[cloud_sql]] instance's automated backups and
point-in-time recovery (the Admin API), and [velero]'s cluster backups (the Kubernetes API).
A run limited to one store (`store`) checks that store only.

Fan-out, for large fleets (`fan_out`, in a run of the deployment): instead of the steps above, one
child run of this deployment per store, all started at once (each in its own process or pod on
the work pool), then one `child-run` finding per store with that child's outcome. Each child pages
its own findings, as a run of one store always did, and keeps its open pages in its store's list
(no two children ever save the same Variable); the parent pages none of them again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.backups import BackupEntry, newest_first
from maint.config import BackupStoreConfig, CloudSqlConfig, MaintConfig, VeleroConfig
from maint.durations import format_duration
from maint.errors import ConfigError, MaintError, StorageError
from maint.flows._duty import (finish_duty, flow_run_url, is_transient, load_duty_config, page_run_failure,
                               start_report, utcnow)
from maint.flows.steps import list_backups, read_backup_in_one_pass, read_failure_finding
from maint.paging import PageScope
from maint.report import Finding, Report, Severity, name_worst
from maint.tasks.state import record_verified
from maint.verification import assess_freshness, assess_integrity, assess_presence, assess_size

DUTY = "backup-verification"
CHILD_RUN_CHECK = "child-run"
# The parent waits for its children until 90% of [dead_mans_switch].stuck_after has passed since it
# started: by then a child still running is stuck by the same measure (and pages as such), and the
# parent still reports before it would itself be paged as stuck.
CHILD_WAIT_SHARE = 0.9


def page_this_run_failure(flow, flow_run, state) -> None:
    """page_run_failure, keeping the page in the store's list when the run was limited to one."""
    page_run_failure(flow, flow_run, state, open_pages_scope=flow_run.parameters.get("store") or None)


@flow(name=DUTY, on_failure=[page_this_run_failure], on_crashed=[page_this_run_failure])
def backup_verification(config_path: str | None = None, store: str | None = None, fan_out: bool = False) -> dict:
    """Daily: every store's newest backup exists, is fresh for its RPO, has a sane size and
    reads back intact. `store` limits the run to one [[backup_stores]] entry by name.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
        store: Verify only this [[backup_stores]] entry (by name); empty means every store.
        fan_out: Verify each store in a child run of this deployment of its own, all at once, and
            report each child's outcome; each child pages its own findings. Outside a deployment
            (maint run) the stores are verified in this run, as without it.
    """
    config = load_duty_config(config_path, DUTY)
    report = start_report(DUTY)
    known = {s.name: s for s in config.backup_stores}
    if store and store not in known:
        raise ConfigError([f"store: no [[backup_stores]] entry named {store!r} (known: {', '.join(known)})"])
    stores = [known[store]] if store else list(config.backup_stores)
    # The Admin and Kubernetes API reads run while the stores are read; a run of one store skips them.
    cloud_sql = [] if store else read_cloud_sql_instance.map(config.cloud_sql)
    velero = read_velero_backups.submit(config.velero) if config.velero and not store else None
    if fan_out and len(stores) > 1:
        deployment = this_deployment()
        if deployment:
            return verify_each_store_in_a_child_run(report, config, config_path, stores, deployment,
                                                    cloud_sql, velero)
        report.details["fan_out"] = (f"not fanned out: this run belongs to no deployment, so its {len(stores)} "
                                     "stores were verified in this run")
    now = utcnow()

    listings = list_backups.map(stores)  # all stores at once
    to_read: list[tuple[BackupStoreConfig, BackupEntry]] = []
    for store_config, listing in zip(stores, listings):
        try:
            entries = listing.result()
        except MaintError as exc:
            report.add(Finding("presence", store_config.url, Severity.CRITICAL, str(exc),
                               _listing_hint(exc, store_config)))
            continue
        report.add(assess_presence(store_config.url, entries))
        if not entries:
            continue
        newest, *older = newest_first(entries)
        report.add(assess_freshness(store_config.url, newest, now, store_config.rpo))
        report.add(assess_size(store_config.url, newest, older[:store_config.size_window]))
        report.details[f"newest {store_config.name}"] = newest.url
        to_read.append((store_config, newest))

    passes = read_backup_in_one_pass.map([s for s, _ in to_read], [e for _, e in to_read])
    for (store_config, newest), one_pass in zip(to_read, passes):
        try:
            result = one_pass.result()
        except MaintError as exc:
            report.add(read_failure_finding(store_config.url, newest, exc))
            continue
        findings = assess_integrity(store_config.url, newest, result)
        for finding in findings:
            report.add(finding)
        if all(f.severity is not Severity.CRITICAL for f in findings):
            record_verified(store_config.name, newest.name)  # retention never deletes it
    add_managed_backup_findings(report, config, cloud_sql, velero)
    return finish_duty(report, config, paging=open_pages_of(store, config))


# --- backups that a service keeps: Cloud SQL, Velero ------------------------------------------------

@task(name="read-cloud-sql-instance", retries=1, retry_delay_seconds=exponential_backoff(2),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def read_cloud_sql_instance(instance: CloudSqlConfig):
    from maint.tasks.cloud_sql import read_cloud_sql

    return read_cloud_sql(instance)


@task(name="read-velero-backups", retries=1, retry_delay_seconds=exponential_backoff(2), cache_policy=NO_CACHE)
def read_velero_backups(velero: VeleroConfig):
    from maint.tasks.kubernetes import list_velero_objects

    return list_velero_objects(velero.namespace, context=velero.context)


def add_managed_backup_findings(report: Report, config: MaintConfig, cloud_sql: list, velero) -> None:
    """The Cloud SQL and Velero checks' findings, judged at one `now` once their reads are back."""
    from maint.cloud_sql import assess_cloud_sql, cloud_sql_unreadable
    from maint.velero import VELERO_CHECKS, assess_velero, velero_unreadable

    now = utcnow()
    for instance, read in zip(config.cloud_sql, cloud_sql):
        try:
            state = read.result()
        except MaintError as exc:
            report.add(cloud_sql_unreadable(instance, exc))
            continue
        for finding in assess_cloud_sql(instance, state, now):
            report.add(finding)
    if velero is not None:
        try:
            objects = velero.result()
        except MaintError as exc:
            report.add(velero_unreadable(config.velero, exc))
            return
        for finding in assess_velero(config.velero, objects.backups, objects.locations, objects.schedules, now):
            report.add(finding)
        # Every object was seen: a page for a schedule or location deleted since is resolved.
        report.exhaustive_checks |= VELERO_CHECKS


def open_pages_of(store: str | None, config: MaintConfig) -> PageScope:
    """A run of one store keeps its pages in that store's list; a run of every store in the duty's.
    Each takes over the pages the other shape left for the same findings."""
    if store:
        return PageScope(scope=store, adopt_from=(None,))
    return PageScope(scope=None, adopt_from=tuple(s.name for s in config.backup_stores))


def _listing_hint(exc: MaintError, store: BackupStoreConfig) -> str:
    if isinstance(exc, StorageError) and store.url.startswith("gs://"):
        return f"check that the bucket in {store.url} exists and this host's service account may list it"
    if isinstance(exc, StorageError) and store.url.startswith("s3://"):
        return f"check that the bucket in {store.url} exists and this host's credentials may list its versions"
    return f"check that {store.url} exists (is the volume mounted?) and is readable"


# --- fan-out: one child run per store ---------------------------------------------------------------

def verify_each_store_in_a_child_run(report: Report, config: MaintConfig, config_path: str | None,
                                     stores: list[BackupStoreConfig], deployment: str, cloud_sql: list,
                                     velero) -> Any:
    """The parent of a fan-out: start every child, wait for them all, one finding per store. The
    children paged their own findings, so this run pages none of its `child-run` findings; the
    Cloud SQL and Velero checks it made itself page as in any run."""
    wait_at_most = config.dead_mans_switch.stuck_after * CHILD_WAIT_SHARE
    child_ids = start_child_runs(deployment, stores, config_path)
    children = wait_for_child_runs(child_ids, report.started_at + wait_at_most)
    waited = utcnow() - report.started_at
    for store_config, child in zip(stores, children):
        report.add(assess_child_run(store_config, child, waited))
    report.details["child runs"] = [{"store": s.name, "flow run": c.name, "state": c.state_name}
                                    for s, c in zip(stores, children)]
    add_managed_backup_findings(report, config, cloud_sql, velero)
    return finish_duty(report, config, paging=PageScope(unpaged_checks=(CHILD_RUN_CHECK,)))


def this_deployment() -> str | None:
    """`flow/deployment` when this run belongs to a deployment, else None (`maint run`)."""
    from prefect.runtime import deployment, flow_run

    return f"{flow_run.flow_name}/{deployment.name}" if deployment.id else None


def start_child_runs(deployment: str, stores: list[BackupStoreConfig], config_path: str | None) -> list[UUID]:
    """One flow run of the deployment per store, linked to this run as its subflows and all
    created before any is waited on (a few milliseconds each), so the pool starts them together."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    child_ids = []
    for store in stores:
        parameters: dict[str, Any] = {"store": store.name, "fan_out": False}
        if config_path:
            parameters["config_path"] = config_path
        child = run_deployment(name=deployment, parameters=parameters, timeout=0, as_subflow=True,
                               flow_run_name=f"{flow_run.name}-{store.name}")
        child_ids.append(child.id)
    return child_ids


@dataclass(frozen=True)
class ChildRun:
    """What the parent saw of one child run: its state, and its findings if it published them."""

    name: str
    state_type: str  # Prefect's StateType value: COMPLETED, FAILED, CRASHED, CANCELLED, RUNNING, ...
    state_name: str  # as the UI shows it: Completed, Late, Crashed, ...
    message: str
    findings: list[Finding] | None
    url: str | None = None


def wait_for_child_runs(child_ids: list[UUID], deadline: datetime) -> list[ChildRun]:
    """The children once every one is final, or as they are at `deadline`. All of them are read
    in one request, every tenth of the time waited so far (1 s to 30 s): a child that ends is
    seen at most 10% later."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started = utcnow()
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=child_ids)),
                                         limit=len(child_ids))
            by_id = {run.id: run for run in runs}
            now = utcnow()
            if now >= deadline or all(run.state and run.state.is_final() for run in by_id.values()):
                break
            remaining = (deadline - now).total_seconds()
            time.sleep(min(max((now - started).total_seconds() / 10, 1.0), 30.0, remaining))
        findings = _published_findings(client, child_ids)
    return [_child_run(child_id, by_id.get(child_id), findings.get(child_id)) for child_id in child_ids]


def _published_findings(client, child_ids: list[UUID]) -> dict[UUID, list[Finding]]:
    """Each child's findings, from its findings artifact: on the Prefect server, so read alike
    whether the child ran beside this run or in another pod (its return value is not stored)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{DUTY}-findings"])),
                                      flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=child_ids)))
    published = {}
    for artifact in artifacts:
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        published[artifact.flow_run_id] = [Finding.from_dict(row) for row in rows if row.get("check") != "-"]
    return published


def _child_run(child_id: UUID, run, findings: list[Finding] | None) -> ChildRun:
    if run is None:  # deleted meanwhile, by hand
        return ChildRun(str(child_id), "CANCELLED", "deleted", "the flow run no longer exists", None)
    state = run.state
    return ChildRun(name=run.name, state_type=state.type.value if state else "SCHEDULED",
                    state_name=state.name if state else "Scheduled", message=(state.message or "") if state else "",
                    findings=findings, url=flow_run_url(run.id))


def assess_child_run(store: BackupStoreConfig, child: ChildRun, waited: timedelta) -> Finding:
    """One store's outcome in a fan-out: its child's report status (the child paged its own
    findings), or critical when the child produced no report: failed, crashed, cancelled, or not
    finished after `waited`. Pure: the child as the parent saw it, no I/O."""
    run = f"child run {child.name}" + (f" ({child.url})" if child.url else "")
    rerun = f"verify it again with a run for store {store.name!r} (maint run {DUTY} --store {store.name})"
    if child.state_type == "COMPLETED" and child.findings:
        status = Severity.worst(f.severity for f in child.findings)
        if status is Severity.OK:
            return Finding(CHILD_RUN_CHECK, store.url, status,
                           f"{run} Completed: ok ({len(child.findings)} findings, all ok)")
        seen = name_worst(child.findings, subjects=False)  # the subject is this finding's: the store
        return Finding(CHILD_RUN_CHECK, store.url, status, f"{run} Completed: {status.value}: {seen}",
                       "the child run's report has every finding and its next step")
    if child.state_type == "COMPLETED":
        return Finding(CHILD_RUN_CHECK, store.url, Severity.WARNING, f"{run} Completed but published no findings",
                       f"open the child run; {rerun}")
    if child.state_type == "FAILED" and Report.is_critical_reason(DUTY, child.message):
        return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL, f"{run} Failed: {child.message}",
                       "the child run's report has every finding and its next step; it paged on-call for them")
    if child.state_type == "FAILED":
        return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL,
                       f"{run} Failed before it could report: {child.message or 'no message'}",
                       f"open the child run's logs (it paged on-call for its failure); {rerun}")
    if child.state_type == "CRASHED":
        return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL, f"{run} Crashed: {child.message or 'no message'}",
                       f"its process or pod died (out of memory? evicted?): open its logs; {rerun}")
    if child.state_type in ("CANCELLED", "CANCELLING"):
        return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL,
                       f"{run} was {child.state_name}: {child.message or 'no message'}",
                       f"someone or something cancelled it; {rerun}")
    if child.state_type in ("SCHEDULED", "PENDING"):
        return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL,
                       f"{run} never started in {format_duration(waited)} (still {child.state_name})",
                       "is a worker polling the deployment's work pool, with room for the parent and every "
                       "child at once (the pool's and the worker's concurrency limits)?")
    return Finding(CHILD_RUN_CHECK, store.url, Severity.CRITICAL,
                   f"{run} still {child.state_name} after {format_duration(waited)}; left to finish, it pages "
                   "its own findings",
                   "a verification this slow is stuck or its store is: open the child run's logs")
