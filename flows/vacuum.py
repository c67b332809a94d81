"""Duty `vacuum`: the bloat and dead-tuple report, then VACUUM (ANALYZE) where it is needed,
never blocking production.

Runbook, for every database in [vacuum].databases at once:
  1. read every table's statistics (catalog and stats views only: no table lock),
  2. report them, largest first, with an estimated bloat,
  3. choose the tables that need VACUUM (ANALYZE) or ANALYZE (plan_vacuum) among those the role
     may vacuum; the others are skipped, one "not owned" finding per schema,
  4. unless this is a dry run, take each database's vacuum lock (a database another vacuum run
     holds is skipped, naming that run), then work through its tables one at a time (or `jobs` at
     a time), with SKIP_LOCKED and a lock_timeout; start no new table once `window` has elapsed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.flows._duty import finish_duty, is_transient, load_duty_config, page_run_failure, start_report, utcnow
from maint.flows.steps import DutyLock, holding_locks
from maint.config import DatabaseConfig, VacuumConfig
from maint.durations import format_bytes
from maint.errors import MaintError
from maint.report import Finding, Severity
from maint.vacuum import (TableStats, VacuumAction, VacuumOutcome, assess_outcome, bloat_rows, estimate_bloat,
                          not_owned_findings, plan_vacuum, planned_finding)
from maint.tasks import postgres


@task(name="read-table-statistics", retries=2, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def read_table_statistics(db: DatabaseConfig, policy: VacuumConfig) -> list[TableStats]:
    return postgres.table_statistics(db, statement_timeout=timedelta(seconds=60), lock_timeout=policy.lock_timeout)


@task(name="vacuum-tables", cache_policy=NO_CACHE)
def vacuum_tables(db: DatabaseConfig, actions: list[VacuumAction], policy: VacuumConfig) -> list[VacuumOutcome]:
    """Work through the plan in order with `jobs` workers, each on a connection of its own (as
    vacuumdb's jobs); after `window`, the tables not yet started are reported as skipped."""
    deadline = time.monotonic() + policy.window.total_seconds()
    queue = iter(enumerate(actions))
    taking = threading.Lock()
    outcomes: list[VacuumOutcome | None] = [None] * len(actions)

    def worker() -> None:
        with postgres.VacuumSession(db, lock_timeout=policy.lock_timeout) as session:
            while True:
                with taking:
                    item = next(queue, None)
                if item is None:
                    return
                index, action = item
                if time.monotonic() >= deadline:
                    outcomes[index] = VacuumOutcome(action.table.qualified_name, action.action, "skipped-time")
                else:
                    outcomes[index] = session.run(action)

    with ThreadPoolExecutor(max_workers=max(1, policy.jobs)) as pool:
        for running in [pool.submit(worker) for _ in range(min(policy.jobs, len(actions)))]:
            running.result()
    return outcomes


@flow(name="vacuum", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def vacuum(config_path: str | None = None, dry_run: bool = False) -> dict:
    """Weekly: report bloat and dead tuples, then VACUUM (ANALYZE) or ANALYZE the tables that need
    it, never waiting on a lock. `dry_run` reports the plan and changes nothing.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
        dry_run: Report the plan and change nothing.
    """
    config = load_duty_config(config_path, "vacuum")
    policy = config.vacuum
    report = start_report("vacuum")
    now = utcnow()
    databases = [config.database(name) for name in policy.databases]

    statistics = read_table_statistics.map(databases, policy=unmapped(policy))
    plans: list[tuple[DatabaseConfig, list[VacuumAction]]] = []
    for db, future in zip(databases, statistics):
        try:
            tables = future.result()
        except MaintError as exc:
            report.add(Finding("statistics", db.address, Severity.CRITICAL, str(exc),
                               f"is PostgreSQL up at {db.host}:{db.port}, and may '{db.user}' connect?"))
            continue
        plan = plan_vacuum(tables, now, policy)  # only what the role may vacuum; the rest, once per schema:
        for finding in not_owned_findings(db.name, db.user, tables, now, policy):
            report.add(finding)
        estimated = [estimate_bloat(t) for t in tables]
        bloat = sum(e.bloat_bytes for e in estimated if e.estimated)
        report.details[f"tables in {db.name}"] = bloat_rows(tables, now)
        report.add(Finding("bloat-report", db.address, Severity.OK,
                           f"{len(tables)} tables, {format_bytes(sum(t.size_bytes for t in tables))}; estimated "
                           f"bloat {format_bytes(bloat)}; {sum(a.action == 'vacuum' for a in plan)} to vacuum, "
                           f"{sum(a.action == 'analyze' for a in plan)} to analyze"))
        plans.append((db, plan))

    if dry_run:
        for db, plan in plans:
            for action in plan:
                report.add(planned_finding(db.name, action))
        report.details["dry run"] = "yes: nothing was changed"
        return finish_duty(report, config)

    locks = {db.name: DutyLock.in_database("vacuum", db, db.dbname) for db, _ in plans}
    with holding_locks(report, list(locks.values()), config.locks):
        plans = [(db, plan) for db, plan in plans if locks[db.name].held]
        runs = vacuum_tables.map([db for db, _ in plans], [plan for _, plan in plans], policy=unmapped(policy))
        for (db, plan), future in zip(plans, runs):
            for action, outcome in zip(plan, future.result()):
                report.add(assess_outcome(db.name, action, outcome, policy))
    return finish_duty(report, config)
