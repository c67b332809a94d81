"""Duty `query-review`: the weekly look at the slowest queries, from pg_stat_statements, week over
week. Read only: it never creates the extension or resets its statistics.

Runbook, for every database in [query_review].databases at once:
  1. read pg_stat_statements in that database (the top by total and by mean execution time),
     or learn why it cannot (not installed, not created, not preloaded: a warning saying how);
  2. load the previous review's snapshot of the same database (a Prefect Variable);
  3. review: the top queries, the ones that got `slower_warning` times slower since that snapshot
     over at least `min_calls` calls, cache misses and temp files, statements hidden from the role;
  4. report and tell on-call; then keep this review's snapshot for the next one (after reporting,
     so a week whose warning could not be delivered is not the next week's baseline).
"""

from __future__ import annotations

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from maint.config import DatabaseConfig, QueryReviewConfig
from maint.errors import MaintError
from maint.flows._duty import finish_duty, is_transient, load_duty_config, page_run_failure, start_report, utcnow
from maint.query_review import QuerySnapshot, StatementsReading, review_queries, top_tables, unavailable_finding
from maint.report import Finding, Severity
from maint.tasks import state
from maint.tasks.postgres.statements import read_statements

SLOWER_CHECK = "query-slower"


@task(name="read-pg-stat-statements", retries=2, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def read_pg_stat_statements(db: DatabaseConfig, review: QueryReviewConfig) -> StatementsReading:
    return read_statements(db, top=review.top, statement_timeout=review.statement_timeout)


@task(name="load-previous-review", cache_policy=NO_CACHE)
def load_previous_review(database: str) -> dict | None:
    return state.load_query_snapshot(database)


@task(name="keep-review-snapshot", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def keep_review_snapshot(database: str, snapshot: dict) -> None:
    state.save_query_snapshot(database, snapshot)


@flow(name="query-review", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def query_review(config_path: str | None = None) -> dict:
    """Weekly: the top queries by total and by mean execution time from pg_stat_statements, and a
    warning for each that got slower since the previous review. Read only.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "query-review")
    review = config.query_review
    report = start_report("query-review")
    now = utcnow()
    databases = [config.database(name) for name in review.databases]

    readings = read_pg_stat_statements.map(databases, review=unmapped(review))
    previous = load_previous_review.map([db.name for db in databases])
    snapshots: dict[str, QuerySnapshot] = {}
    for db, reading_future, previous_future in zip(databases, readings, previous):
        try:
            reading = reading_future.result()
        except MaintError as exc:
            report.add(Finding("statistics", db.address, Severity.CRITICAL, str(exc),
                               f"is PostgreSQL up at {db.host}:{db.port}, may '{db.user}' connect, and may it read "
                               "pg_stat_statements (USAGE on the extension's schema)?"))
            continue
        if reading.unavailable:
            report.add(unavailable_finding(db.address, reading))
            continue
        last = QuerySnapshot.from_dict(previous_future.result(), db.address)
        findings, snapshots[db.name] = review_queries(db.address, reading.stats, last, review, now,
                                                      reading.stats_reset, role=db.user)
        for finding in findings:
            report.add(finding)
        for table, rows in top_tables(reading.stats, last, reading.stats_reset, review.top).items():
            report.details[f"top queries {table} in {db.name}"] = rows
        report.details[f"previous review of {db.name}"] = last.taken_at.isoformat(timespec="seconds") if last else "none"
    if len(snapshots) == len(databases):
        # Every database compared in full: a query-slower page whose query is not slower now resolves.
        report.exhaustive_checks.add(SLOWER_CHECK)

    result = finish_duty(report, config)
    for name, snapshot in snapshots.items():
        keep_review_snapshot(name, snapshot.to_dict())
    return result
