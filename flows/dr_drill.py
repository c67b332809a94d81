"""Duty `dr-drill`: a monthly, measured disaster-recovery drill, written up as a drill record.

Runbook:
  1. take the dr-drill lock on the DR server (another drill of this store running: report who
     runs it, stop), then declare a simulated loss of the database at t0,
  2. find the newest backup and verify it (checksums and a full archive read),
  3. restore it into a scratch database on the DR server, validate it, run the SQL checks and
     drop the scratch database (the restore test's own steps),
  4. measure RTO (t0 to validated restore) and RPO (t0 minus the backup's snapshot time) against
     the targets, and write the record: summary, timeline, RTO/RPO, result, action items;
     release the lock.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from maint.backups import newest_first
from maint.drill import assess_objective, drill_record
from maint.errors import MaintError
from maint.flows._duty import finish_duty, flow_run_url, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.steps import (DutyLock, ScratchRules, holding_lock, list_backups, read_backup_in_one_pass,
                               restore_and_validate)
from maint.report import Finding, Severity
from maint.verification import assess_integrity

@flow(name="dr-drill", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def dr_drill(config_path: str | None = None) -> dict:
    """Monthly: recover the database from its newest backup as if it were lost, and time it.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "dr-drill")
    dd = config.dr_drill
    store_config, server = config.store(dd.store), config.database(dd.server)
    database = store_config.database
    rules = ScratchRules.of(config)
    report = start_report("dr-drill")
    t0 = utcnow()
    timeline: list[tuple[datetime, str]] = []
    rto = rpo = None
    try:
        with holding_lock(report, DutyLock.in_database("dr-drill", server, store_config.url, store_config.url),
                          config.locks) as held:
            if not held:  # another drill of this store is running; the finding names it
                return finish_duty(report, config)
            t0 = utcnow()  # declared once the lock is held: no wait for it counts against the RTO
            timeline.append((t0, f"simulated loss of database {database} declared"))
            entries = list_backups(store_config)
            if not entries:
                raise MaintError(f"no backup in {store_config.url}: there is nothing to recover from")
            newest = newest_first(entries)[0]
            if newest.created_at is None:
                raise MaintError(f"the newest backup {newest.url} has no known creation time: the data lost "
                                 "(RPO) cannot be measured")
            rpo = t0 - newest.created_at
            timeline.append((utcnow(), f"newest backup found: {newest.url} (snapshot "
                                       f"{newest.created_at.isoformat(timespec='seconds')})"))
            integrity = assess_integrity(store_config.url, newest, read_backup_in_one_pass(store_config, newest))
            for finding in integrity:
                report.add(finding)
            if any(f.severity is Severity.CRITICAL for f in integrity):
                timeline.append((utcnow(), "backup verification FAILED: the drill stops; nothing was restored"))
            else:
                timeline.append((utcnow(), "backup verified: checksums match, archive reads in full"))
                restored = restore_and_validate(store_config, server, newest, rules, dd.sql_checks, t0)
                timeline += restored.timeline
                for finding in restored.findings:
                    report.add(finding)
                if restored.failure:
                    raise restored.failure
                if not any(f.severity is Severity.CRITICAL for f in report.findings):
                    rto = restored.validated_at - t0
                report.details.update(restored.report_seconds)
    except MaintError as exc:
        timeline.append((utcnow(), f"FAILED: {exc}"))
        report.add(Finding("drill", store_config.url, Severity.CRITICAL, str(exc),
                           "the drill could not recover the database: fix this before a real loss does"))
    if rto is not None:
        report.add(assess_objective("rto", database, rto, dd.rto_target))
    else:
        report.add(Finding("rto", database, Severity.CRITICAL, "not reached: no validated restore",
                           "see the failures above"))
    if rpo is not None:
        report.add(assess_objective("rpo", database, rpo, dd.rpo_target))
    record = drill_record(database=database, store=store_config.url, t0=t0, timeline=timeline, rto=rto,
                          rto_target=dd.rto_target, rpo=rpo, rpo_target=dd.rpo_target, findings=report.findings,
                          flow_run_url=flow_run_url())
    create_markdown_artifact(markdown=record, key="dr-drill-record", description=f"DR drill of {database}")
    report.details["record"] = record
    return finish_duty(report, config)
