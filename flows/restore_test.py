"""Duty `restore-test`: restore the newest backup into a scratch database, validate it, time it,
and always drop the scratch database.

Runbook:
  1. take the restore-test lock on the server (another restore test of this store running:
     report who runs it, stop),
  2. drop scratch databases that crashed runs left behind (only maint's own names, only old ones),
  3. find the store's newest backup (by real creation time),
  4. fetch it (a local store's file is used in place; a GCS object is downloaded, timed),
  5. create a scratch database named prefix + timestamp, pg_restore into it with `jobs` workers,
  6. validate: every manifest table with exactly its row count (without a manifest: every table of
     the archive's table of contents), then the optional SQL checks,
  7. drop the scratch database, whatever happened in 5 and 6; release the lock.
The restore time is the measured RTO of this backup.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from maint.backups import newest_first
from maint.config import DatabaseConfig
from maint.errors import MaintError
from maint.flows._duty import finish_duty, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.steps import DutyLock, ScratchRules, holding_lock, list_backups, restore_and_validate
from maint.report import Finding, Severity
from maint.restore import leftover_scratch_databases
from maint.tasks import postgres


@task(name="drop-leftover-scratch-databases", cache_policy=NO_CACHE)
def drop_leftovers(server: DatabaseConfig, rules: ScratchRules, older_than_seconds: float) -> list[str]:
    leftovers = leftover_scratch_databases(postgres.list_databases(server), rules.prefix, utcnow(),
                                           timedelta(seconds=older_than_seconds))
    for name in leftovers:
        postgres.drop_scratch_database(server, name, prefix=rules.prefix, protected=set(rules.protected))
    return leftovers


@flow(name="restore-test", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def restore_test(config_path: str | None = None) -> dict:
    """Friday: the newest backup restores, holds what its manifest says, and how long it takes.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "restore-test")
    rt = config.restore_test
    store_config, server = config.store(rt.store), config.database(rt.server)
    rules = ScratchRules.of(config)
    report = start_report("restore-test")
    try:
        with holding_lock(report, DutyLock.in_database("restore-test", server, store_config.url,
                                                       store_config.url), config.locks) as held:
            if not held:  # another restore test of this store is running; the finding names it
                return finish_duty(report, config)
            now = utcnow()
            for name in drop_leftovers(server, rules, rt.leftover_age.total_seconds()):
                report.add(Finding("leftovers", server.address, Severity.WARNING,
                                   f"dropped scratch database {name}, left behind by a crashed earlier run",
                                   "look for a restore-test run that crashed or was killed around that time"))
            entries = list_backups(store_config)
            if not entries:
                report.add(Finding("restore", store_config.url, Severity.CRITICAL, f"no backup in {store_config.url}",
                                   "nothing to restore: is the backup job running?"))
            else:
                newest = newest_first(entries)[0]
                restored = restore_and_validate(store_config, server, newest, rules, rt.sql_checks, now)
                for finding in restored.findings:
                    report.add(finding)
                if restored.failure:
                    raise restored.failure
                report.details.update({"backup": newest.url, **restored.report_seconds})
                report.details["measured RTO"] = f"{restored.seconds['restore']:.1f}s (restore time)"
    except MaintError as exc:
        report.add(Finding("restore", store_config.url, Severity.CRITICAL, str(exc),
                           "the backup did not restore: treat it as lost and take a new one; read the message"))
    return finish_duty(report, config)

