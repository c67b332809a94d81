"""Duty `backup-retention`: delete old backups safely. A dry run unless `apply` is set.

Runbook:
  1. only with `apply`: take the store's retention lock (another run applying retention to it:
     report who runs it, stop); a dry run changes nothing and takes none,
  2. list the store's backups (by real creation time) and which one last passed verification,
  3. plan: keep_last, then the newest per day/ISO week/month (GFS), min_keep, the verified one;
     refuse to delete anything if no backup arrived within the RPO,
  4. report the plan; only with `apply`: delete each planned backup, its dump first and its
     manifest last, each pinned to the generation that was listed. An object the store will not
     delete (a hold, a retention lock) is skipped and reported. Release the lock.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from maint.backups import BackupEntry
from maint.config import BackupStoreConfig, MaintConfig
from maint.errors import DeleteRefused, MaintError
from maint.flows._duty import finish_duty, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.steps import DutyLock, holding_lock, list_backups
from maint.report import Finding, Report, Severity
from maint.retention import Decision, plan_retention
from maint.tasks.state import last_verified
from maint.tasks.storage import open_store


_SHOWN_DELETIONS = 200


@task(name="delete-backups", cache_policy=NO_CACHE)
def delete_backups(store_config: BackupStoreConfig, deletions: list[Decision]) -> list[tuple[str, str]]:
    """Delete dump then manifest for each; returns (url, problem) for what was not deleted.

    The manifest goes last: a dump without a manifest looks incomplete, never the reverse."""
    store = open_store(store_config)
    refused = []
    for decision in deletions:
        backup = decision.backup
        try:
            store.delete(backup.name, generation=backup.generation)
            if backup.manifest_name:
                store.delete(backup.manifest_name, generation=backup.manifest_generation)
        except DeleteRefused as exc:
            refused.append((backup.url, str(exc)))
    return refused


@flow(name="backup-retention", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def backup_retention(config_path: str | None = None, apply: bool = False) -> dict:
    """Weekly: plan which backups to keep (GFS) and, only with `apply`, delete the rest.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
        apply: Really delete the backups the plan names; off, the plan is only reported.
    """
    config = load_duty_config(config_path, "backup-retention")
    store_config = config.store(config.retention.store)
    report = start_report("backup-retention")
    lock = DutyLock.in_store("backup-retention", store_config, config.locks) if apply else None
    try:
        with holding_lock(report, lock, config.locks) as held:
            if held:
                plan_and_apply_retention(report, config, store_config, apply)
    except MaintError as exc:
        report.add(Finding("retention", store_config.url, Severity.CRITICAL, str(exc),
                           f"check that {store_config.url} exists and may be listed (and written, to --apply)"))
    return finish_duty(report, config)


def plan_and_apply_retention(report: Report, config: MaintConfig, store_config: BackupStoreConfig,
                             apply: bool) -> None:
    """Steps 2 to 4 of the runbook, into `report`."""
    policy = config.retention
    backups = list_backups(store_config)
    plan = plan_retention(backups, policy, utcnow(), rpo=store_config.rpo, verified=last_verified(store_config.name),
                          zone=ZoneInfo(config.timezone))
    # Every kept backup and the first deletions: a store of 100,000 objects must not turn into a
    # 10 MB report artifact; the counts below cover the rest.
    shown_deletions = {d.backup.name for d in plan.deletions[:_SHOWN_DELETIONS]}
    report.details["plan"] = [{"backup": d.backup.name, "created": _created(d.backup),
                               "decision": "keep" if d.keep else "delete", "why": "; ".join(d.reasons)}
                              for d in plan.decisions if d.keep or d.backup.name in shown_deletions]
    if len(plan.deletions) > _SHOWN_DELETIONS:
        report.details["plan not shown"] = f"{len(plan.deletions) - _SHOWN_DELETIONS} more deletions"
    if plan.refused:
        report.add(Finding("retention", store_config.url, Severity.WARNING, plan.refused,
                           "run `maint run backup-verification` and look at the backup job's recent runs"))
        return
    deletions = plan.deletions
    summary = f"{len(backups)} backups: keep {len(backups) - len(deletions)}, delete {len(deletions)}"
    if not apply:
        report.add(Finding("retention", store_config.url, Severity.OK,
                           f"dry run: {summary}; nothing deleted (run with --apply to delete)"))
        return
    refused = delete_backups(store_config, deletions) if deletions else []
    for url, problem in refused:
        report.add(Finding("retention-skipped", url, Severity.WARNING, problem,
                           "release the hold or wait for the retention lock, if the backup should go"))
    report.add(Finding("retention", store_config.url, Severity.OK,
                       f"{summary}: deleted {len(deletions) - len(refused)}, skipped {len(refused)}"))


def _created(backup: BackupEntry) -> str:
    return backup.created_at.isoformat(timespec="seconds") if backup.created_at else "unknown"
