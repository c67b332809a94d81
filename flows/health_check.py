"""Duty `health-check`: the morning checklist, every part at once.

Runbook (all parts concurrently; one part failing to connect is a finding, never a crash of
the others):
  - endpoints answer with the expected status, fast enough, with valid TLS;
  - each database: reachable, connections against the usable maximum, long-running queries,
    sessions idle in transaction, blocked queries and who blocks them, xid/multixact wraparound
    age, and the ten largest tables for the record;
  - SQL data checks (pass when they return no rows), read-only;
  - Alertmanager: every active, unsilenced, uninhibited alert (the v2 API), silenced and
    inhibited ones counted, never paged;
  - Redis: PING within its latency bound, then INFO: memory against maxmemory, evictions and
    rejected connections since the previous check, clients, persistence, replication;
  - Kubernetes pods that are not healthy, and nodes: Ready, pressure, cordons, usage.
"""

from __future__ import annotations

import secrets

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from maint.flows._duty import finish_duty, is_transient, load_duty_config, page_run_failure, start_report, utcnow
from maint.config import (AlertmanagerConfig, DatabaseConfig, EndpointConfig, HealthCheckConfig,
                          KubernetesConfig, RedisConfig, SqlCheckConfig)
from maint.durations import format_bytes
from maint.errors import MaintError
from maint.health import (EndpointResult, ServerHealth, SqlCheckResult, assess_endpoint, assess_server,
                          assess_sql_check)
from maint.report import Finding, Severity
from maint.tasks import http, postgres


@task(name="check-endpoints", cache_policy=NO_CACHE)
def check_endpoints(endpoints: list[EndpointConfig]) -> list[EndpointResult]:
    return http.check_endpoints(endpoints)


@task(name="check-database", retries=1, retry_delay_seconds=exponential_backoff(1),
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def check_database(db: DatabaseConfig, hc: HealthCheckConfig, application_name: str) -> ServerHealth:
    return postgres.server_health(db, long_query=hc.long_query, idle_in_transaction=hc.idle_in_transaction,
                                  blocked=hc.blocked, statement_timeout=hc.statement_timeout,
                                  lock_timeout=hc.lock_timeout, application_name=application_name)


@task(name="run-sql-check", cache_policy=NO_CACHE)
def run_sql_check(check: SqlCheckConfig, db: DatabaseConfig, application_name: str) -> SqlCheckResult:
    return postgres.run_sql_check(db, check.sql, check.timeout, application_name=application_name)


@task(name="list-pods", retries=1, retry_delay_seconds=exponential_backoff(1), cache_policy=NO_CACHE)
def list_pods(kube: KubernetesConfig) -> list:
    from maint.tasks.kubernetes import list_pods as list_pods_in_namespaces

    return list_pods_in_namespaces(kube.namespaces, context=kube.context)


@task(name="list-nodes", retries=1, retry_delay_seconds=exponential_backoff(1), cache_policy=NO_CACHE)
def list_nodes(kube: KubernetesConfig):
    from maint.tasks.kubernetes import list_nodes as list_nodes_of_the_cluster

    return list_nodes_of_the_cluster(context=kube.context)


@task(name="list-alerts", retries=1, retry_delay_seconds=exponential_backoff(1), cache_policy=NO_CACHE)
def list_alerts(alertmanager: AlertmanagerConfig) -> list[dict]:
    from maint.tasks.alertmanager import list_alerts as list_alerts_of

    return list_alerts_of(alertmanager)


@task(name="check-redis", cache_policy=NO_CACHE)
def check_redis(server: RedisConfig) -> tuple[list[Finding], dict | None]:
    """PING and INFO, judged against what the previous check saw of the same server. Returns the
    findings and this sample's counters, to be kept for the next check (None when no sample was
    taken); the flow saves them once every part has finished (see `keep_redis_counters`)."""
    from maint.errors import RedisError
    from maint.redis_info import RedisCounters, assess_redis, redis_unreachable
    from maint.tasks.redis import sample_redis
    from maint.tasks.state import load_redis_counters

    now = utcnow()
    try:
        sample = sample_redis(server)
    except RedisError as exc:
        return [redis_unreachable(server, exc)], None
    findings = assess_redis(server, sample, RedisCounters.from_dict(load_redis_counters(server.address)), now)
    return findings, sample.counters(now).to_dict()


def keep_redis_counters(counters: dict[str, dict]) -> None:
    """Saved after the other parts, not inside check-redis: a Variable write made while the
    other tasks' states and logs are being written met the local server's busy SQLite (a 503,
    and the client's ~2 s back-off) in most runs of bench/health.py --new-parts."""
    from maint.tasks.state import save_redis_counters

    for address, sample in counters.items():
        save_redis_counters(address, sample)


@flow(name="health-check", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def health_check(config_path: str | None = None) -> dict:
    """The daily morning checklist: endpoints, databases, data checks and pods, all at once.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "health-check")
    hc = config.health_check
    report = start_report("health-check")
    now = utcnow()

    # Every connection of this run carries this name, and the connection count leaves them out.
    ours = f"maint health-check {secrets.token_hex(4)}"
    endpoints = check_endpoints.submit(quote(hc.endpoints))
    databases = {name: check_database.submit(config.database(name), quote(hc), ours) for name in hc.databases}
    data_checks = [(check, run_sql_check.submit(check, config.database(check.database), ours))
                   for check in hc.sql_checks]
    pods = list_pods.submit(hc.kubernetes) if hc.kubernetes else None
    nodes = list_nodes.submit(hc.kubernetes) if hc.kubernetes and hc.kubernetes.nodes else None
    redis = check_redis.map(hc.redis)
    alerts = list_alerts.map(hc.alertmanager)

    for endpoint, result in zip(hc.endpoints, endpoints.result()):
        report.add(assess_endpoint(endpoint.url, endpoint.expect_status, endpoint.max_latency, result))

    for name, future in databases.items():
        db = config.database(name)
        try:
            health = future.result()
        except MaintError as exc:
            report.add(Finding("reachable", db.address, Severity.CRITICAL, str(exc),
                               f"is PostgreSQL up at {db.host}:{db.port}, and may '{db.user}' connect from here?"))
            continue
        for finding in assess_server(db.address, health, long_query=hc.long_query,
                                     idle_in_transaction=hc.idle_in_transaction, blocked=hc.blocked,
                                     connections_warning=hc.connections_warning,
                                     connections_critical=hc.connections_critical):
            report.add(finding)
        report.details[f"largest tables in {name}"] = [
            {"table": table, "size": format_bytes(size)} for table, size in health.largest_tables]

    for check, future in data_checks:
        try:
            report.add(assess_sql_check(check.name, check.database, check.severity, future.result()))
        except MaintError as exc:
            report.add(Finding("sql-check", f"{check.database}: {check.name}", Severity(check.severity),
                               f"the check could not run: {exc}", "fix the query or its permissions; "
                               "it runs read-only under a statement_timeout"))

    redis_counters: dict[str, dict] = {}
    for server, checked in zip(hc.redis, redis):
        try:
            findings, counters = checked.result()
        except MaintError as exc:  # not the server's answer: its counters could not be read, say
            report.add(Finding("redis-ping", server.address, Severity.CRITICAL, str(exc),
                               "the check itself could not run: see the run's log"))
            continue
        for finding in findings:
            report.add(finding)
        if counters is not None:
            redis_counters[server.address] = counters

    add_alert_findings(report, hc, alerts, now)

    api_unreachable = False
    if pods is not None:
        from maint.pods import assess_pods

        try:
            for finding in assess_pods(pods.result(), now, hc.kubernetes.max_restarts,
                                       namespaces=hc.kubernetes.namespaces):
                report.add(finding)
            report.exhaustive_checks.add("pods")  # every pod was seen: unflagged ones are fine
        except MaintError as exc:
            api_unreachable = True
            report.add(Finding("kubernetes", "kubernetes API", Severity.CRITICAL, str(exc),
                               "check KUBECONFIG / in-cluster credentials and that the API server is reachable"))
    if nodes is not None:
        from maint.nodes import assess_nodes, exhaustive_checks

        try:
            listing = nodes.result()
        except MaintError as exc:
            if not api_unreachable:  # else the one `kubernetes API` finding above says it all
                report.add(Finding("nodes", "nodes", Severity.CRITICAL, str(exc),
                                   "may maint list nodes? README: On Kubernetes (the ClusterRole "
                                   "maint-health-check-nodes)"))
        else:
            for finding in assess_nodes(hc.kubernetes, listing.nodes, listing.metrics, now,
                                        metrics_unavailable=listing.metrics_unavailable):
                report.add(finding)
            report.exhaustive_checks |= exhaustive_checks(listing.metrics)  # every node was seen
    keep_redis_counters(redis_counters)
    return finish_duty(report, config)


def add_alert_findings(report, hc: HealthCheckConfig, alerts: list, now) -> None:
    """One finding per firing alert of every Alertmanager. The alert check is exhaustive (a page
    for an alert that stopped firing resolves) only when every Alertmanager answered: one that
    did not would otherwise resolve all of its alerts' pages unseen."""
    from maint.alerts import ALERT_CHECK, alertmanager_unreachable, assess_alerts

    every_one_answered = True
    for alertmanager, listing in zip(hc.alertmanager, alerts):
        try:
            found = assess_alerts(alertmanager, listing.result(), now)
        except MaintError as exc:
            found = [alertmanager_unreachable(alertmanager, exc)]
            every_one_answered = False
        for finding in found:
            report.add(finding)
    if every_one_answered:
        report.exhaustive_checks.add(ALERT_CHECK)
