"""Health-check decisions: endpoints, connections, long/idle/blocked sessions, wraparound, SQL
data checks. Pure: what the tasks observed comes in, findings go out.

Session findings are one per database and check (not one per pid): pids change from run to run,
and the page for "long queries on prod" must resolve once there are none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from maint.durations import format_duration
from maint.report import Finding, Severity

WRAPAROUND_LIMIT = 2**31
_LISTED = 5  # sessions or rows quoted in one message


@dataclass(frozen=True)
class EndpointResult:
    url: str
    status: int | None  # None when no response came back
    latency: timedelta | None
    failure: str | None = None  # "timeout" | "connect" | "tls" | "http"
    detail: str = ""


def assess_endpoint(url: str, expect_status: int, max_latency: timedelta, result: EndpointResult) -> Finding:
    if result.failure == "tls":
        return Finding("endpoint", url, Severity.CRITICAL, f"TLS error: {result.detail}",
                       "check the certificate chain, its expiry and the hostname it was issued for "
                       "(`maint run cert-check`)")
    if result.failure == "timeout":
        return Finding("endpoint", url, Severity.CRITICAL, f"no response: {result.detail}",
                       "is the service up? check its pods, load balancer and recent deploys")
    if result.failure is not None:
        return Finding("endpoint", url, Severity.CRITICAL, f"cannot connect: {result.detail}",
                       "is the service up and is DNS right? check its pods and load balancer")
    latency = format_duration(result.latency) if result.latency is not None else "?"
    if result.status != expect_status:
        return Finding("endpoint", url, Severity.CRITICAL,
                       f"answered {result.status} in {latency}, expected {expect_status}",
                       "read the service's logs and its health endpoint's output")
    if result.latency is not None and result.latency > max_latency:
        return Finding("endpoint", url, Severity.WARNING,
                       f"answered {result.status} in {latency}; max_latency is {format_duration(max_latency)}",
                       "slow: check the service's saturation (CPU, connection pools, database)")
    return Finding("endpoint", url, Severity.OK, f"answered {result.status} in {latency}")


# --- PostgreSQL ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    pid: int
    user: str | None
    application: str | None
    duration: timedelta
    query: str  # first 200 characters
    blocked_by: tuple[int, ...] = ()
    blocking_queries: tuple[str, ...] = ()  # the blockers' queries, first 200 characters each

    def describe(self) -> str:
        text = (f"pid {self.pid} ({self.user or '?'}, {self.application or 'no application_name'}) "
                f"for {format_duration(self.duration)}: {_one_line(self.query)}")
        if self.blocked_by:
            blockers = "; ".join(f"pid {pid}: {_one_line(q)}" for pid, q in zip(self.blocked_by, self.blocking_queries))
            text += f", blocked by {blockers}"
        return text


@dataclass(frozen=True)
class ServerHealth:
    """What one database's health queries saw."""

    server_version: str
    max_connections: int
    reserved_connections: int  # superuser_reserved_connections + reserved_connections (PG16+)
    client_connections: int
    long_queries: list[Session] = field(default_factory=list)
    idle_in_transaction: list[Session] = field(default_factory=list)
    blocked: list[Session] = field(default_factory=list)
    xid_age: tuple[str, int] = ("", 0)  # oldest database by age(datfrozenxid)
    mxid_age: tuple[str, int] = ("", 0)  # oldest database by mxid_age(datminmxid)
    largest_tables: list[tuple[str, int]] = field(default_factory=list)  # (schema.table, bytes)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def assess_connections(subject: str, health: ServerHealth, warning: float, critical: float) -> Finding:
    usable = max(health.max_connections - health.reserved_connections, 1)
    share = health.client_connections / usable
    message = (f"{health.client_connections} client connections of {usable} usable "
               f"(max_connections {health.max_connections} minus {health.reserved_connections} reserved): {share:.0%}")
    hint = "find who holds them (pg_stat_activity by application_name); check pool sizes and leaks"
    if share >= critical:
        return Finding("connections", subject, Severity.CRITICAL, message, hint)
    if share >= warning:
        return Finding("connections", subject, Severity.WARNING, message, hint)
    return Finding("connections", subject, Severity.OK, message)


def _sessions_finding(check: str, subject: str, sessions: list[Session], severity: Severity, what: str,
                      threshold: timedelta, hint: str) -> Finding:
    if not sessions:
        return Finding(check, subject, Severity.OK, f"no {what} over {format_duration(threshold)}")
    worst = sorted(sessions, key=lambda s: s.duration, reverse=True)
    listed = "; ".join(s.describe() for s in worst[:_LISTED])
    more = f"; and {len(worst) - _LISTED} more" if len(worst) > _LISTED else ""
    return Finding(check, subject, severity,
                   f"{len(worst)} {what} over {format_duration(threshold)}: {listed}{more}", hint)


def assess_long_queries(subject: str, sessions: list[Session], threshold: timedelta) -> Finding:
    # A warning: a long report query is often legitimate; a page would be noise.
    return _sessions_finding("long-queries", subject, sessions, Severity.WARNING, "queries running", threshold,
                             "is it expected (a report, a migration)? if not: SELECT pg_cancel_backend(pid)")


def assess_idle_in_transaction(subject: str, sessions: list[Session], threshold: timedelta) -> Finding:
    # A warning: it holds locks and blocks vacuum, but harms slowly; set idle_in_transaction_session_timeout.
    return _sessions_finding("idle-in-transaction", subject, sessions, Severity.WARNING,
                             "sessions idle in transaction", threshold,
                             "an application left a transaction open: fix it, or set "
                             "idle_in_transaction_session_timeout; SELECT pg_terminate_backend(pid) ends it now")


def assess_blocked(subject: str, sessions: list[Session], threshold: timedelta) -> Finding:
    # Critical: someone is waiting right now, and lock queues grow until the application stalls.
    return _sessions_finding("blocked-queries", subject, sessions, Severity.CRITICAL, "queries blocked",
                             threshold, "look at the blocking pid's query; cancel it if it should not be "
                             "holding the lock: SELECT pg_cancel_backend(blocking_pid)")


def assess_wraparound(subject: str, health: ServerHealth) -> list[Finding]:
    """Warning at 50% and critical at 75% of 2^31: anti-wraparound vacuum must finish well before."""
    findings = []
    for check, label, (datname, age) in (("xid-wraparound", "transaction ID age", health.xid_age),
                                         ("mxid-wraparound", "multixact ID age", health.mxid_age)):
        share = age / WRAPAROUND_LIMIT
        message = f"{label} {age:,} in database {datname!r}: {share:.1%} of 2^31"
        hint = (f"VACUUM (FREEZE) the oldest tables in {datname!r}; check that autovacuum is not blocked "
                "(long transactions, prepared transactions, replication slots)")
        if share >= 0.75:
            findings.append(Finding(check, subject, Severity.CRITICAL, message, hint))
        elif share >= 0.50:
            findings.append(Finding(check, subject, Severity.WARNING, message, hint))
        else:
            findings.append(Finding(check, subject, Severity.OK, message))
    return findings


def assess_server(subject: str, health: ServerHealth, *, long_query: timedelta, idle_in_transaction: timedelta,
                  blocked: timedelta, connections_warning: float, connections_critical: float) -> list[Finding]:
    return [
        Finding("reachable", subject, Severity.OK, f"PostgreSQL {health.server_version}"),
        assess_connections(subject, health, connections_warning, connections_critical),
        assess_long_queries(subject, health.long_queries, long_query),
        assess_idle_in_transaction(subject, health.idle_in_transaction, idle_in_transaction),
        assess_blocked(subject, health.blocked, blocked),
        *assess_wraparound(subject, health),
    ]


@dataclass(frozen=True)
class SqlCheckResult:
    row_count: int
    columns: list[str]
    first_rows: list[tuple]


def assess_sql_check(name: str, database: str, severity: str, result: SqlCheckResult) -> Finding:
    subject = f"{database}: {name}"
    if result.row_count == 0:
        return Finding("sql-check", subject, Severity.OK, "no rows: passes")
    rows = "; ".join(", ".join(f"{c}={_sql_value(v)}" for c, v in zip(result.columns, row)) for row in result.first_rows)
    return Finding("sql-check", subject, Severity(severity),
                   f"{result.row_count} row(s) returned; first: {rows}",
                   "the query returns the offending rows: run it to see them all and fix the data or the code")


def _sql_value(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
