"""Cloud SQL's own backups: is the instance up, do its automated backups run and are they fresh,
and does point-in-time recovery reach to within the RPO.

Pure: the Admin API's JSON comes in (plain dicts with its camelCase keys: a DatabaseInstance, the
BackupRun items of `backupRuns.list`, the answer of `getLatestRecoveryTime`), `CloudSqlState`
and findings go out. No I/O and no clock: `now` is a parameter.

Three checks, one finding each per instance, all with the subject `project:instance` (as gcloud's
connection names read), and an OK finding when healthy, so that a page opened for one is resolved
by the next good run:

- `cloud-sql-instance`: the instance is RUNNABLE and not stopped (an API error reading it is a
  critical finding of this check too, see `cloud_sql_unreadable`);
- `cloud-sql-backups`: automated backups are enabled, the newest finished automated run did not
  fail or get skipped, and the newest successful run is fresh;
- `cloud-sql-pitr`: point-in-time recovery is on and its latest recovery time is within the RPO,
  when the RPO is under a day.

Why the backup runs are not held to a short RPO: Cloud SQL takes one automated backup a day,
started somewhere in a 4-hour window. A 15m RPO can only be met by point-in-time recovery (the
transaction logs: WAL for PostgreSQL, binary logs for MySQL, replayed on top of a backup), so
with an RPO under a day the backup runs are judged against `DAILY_BACKUP_LIMIT` (a day, the
4-hour window, and 2 hours for a large instance's run: 30h) and the RPO itself by
`now - latestRecoveryTime`. The base backups still matter then: a point-in-time restore starts
from one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from maint.config import CloudSqlConfig
from maint.durations import format_duration
from maint.report import Finding, Severity

INSTANCE_CHECK = "cloud-sql-instance"
BACKUPS_CHECK = "cloud-sql-backups"
PITR_CHECK = "cloud-sql-pitr"

DAILY_BACKUP_LIMIT = timedelta(hours=30)
ONE_DAY = timedelta(days=1)

# Runs that ended: SUCCESSFUL holds a backup, FAILED and SKIPPED do not. DELETED and the
# DELETION_* states are backups that are gone or going (retention, an operator): they count for
# neither freshness nor failure. ENQUEUED, RUNNING and OVERDUE have not ended yet.
_ENDED = {"SUCCESSFUL", "FAILED", "SKIPPED"}

# Instance states, as an on-call engineer judges them for backups:
# - SUSPENDED (billing, abuse), FAILED (creation or maintenance failed fatally) and PENDING_DELETE
#   (the instance, and with it its automated backups, is going): no backups are being taken and
#   someone must act now: critical.
# - MAINTENANCE and PENDING_CREATE are planned and pass on their own; REPAIRING is a read pool
#   node; the deprecated ONLINE_MAINTENANCE still serves. A warning: the next run sees whether it
#   passed, and the backups check pages if a backup is missed meanwhile.
_CRITICAL_STATES = {"SUSPENDED", "FAILED", "PENDING_DELETE"}
_STATE_HINTS = {
    "SUSPENDED": "a suspended instance is usually a billing problem: check the project's billing account "
                 "and {describe} (suspensionReason)",
    "FAILED": "{describe} and gcloud sql operations list --instance={instance} --project={project} --limit=10: "
              "which operation failed? Open a support case if it does not recover",
    "PENDING_DELETE": "the instance is being deleted, and its automated backups with it: if that is not intended, "
                      "act now; if it is, remove it from [[cloud_sql]]",
    "MAINTENANCE": "planned maintenance passes on its own: gcloud sql operations list --instance={instance} "
                   "--project={project} --limit=5",
    "PENDING_CREATE": "the instance is being created (gcloud sql operations list --instance={instance} "
                      "--project={project} --limit=5); its first automated backup runs in its backup window",
}


# --- what is read ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CloudSqlInstance:
    """The parts of a DatabaseInstance the checks need."""

    name: str
    state: str  # RUNNABLE | SUSPENDED | PENDING_DELETE | PENDING_CREATE | MAINTENANCE | FAILED | ...
    database_version: str  # POSTGRES_16, MYSQL_8_0, SQLSERVER_2022_STANDARD, ...
    activation_policy: str  # ALWAYS | NEVER (stopped by its owner) | ON_DEMAND
    instance_type: str = ""  # CLOUD_SQL_INSTANCE | READ_REPLICA_INSTANCE | ...
    master_instance_name: str = ""  # a replica's primary
    suspension_reasons: tuple[str, ...] = ()
    backups_enabled: bool = False
    point_in_time_recovery_enabled: bool = False  # PostgreSQL and SQL Server
    binary_log_enabled: bool = False  # MySQL: its point-in-time recovery is the binary log
    transaction_log_retention_days: int | None = None
    retained_backups: int | None = None  # backupRetentionSettings.retainedBackups
    backup_start_time: str = ""  # the backup window's start, HH:MM UTC

    @property
    def is_mysql(self) -> bool:
        return self.database_version.startswith("MYSQL")

    @property
    def has_point_in_time_recovery(self) -> bool:
        return self.binary_log_enabled if self.is_mysql else self.point_in_time_recovery_enabled

    @property
    def is_stopped(self) -> bool:
        return self.activation_policy == "NEVER"


@dataclass(frozen=True)
class BackupRun:
    """One item of `backupRuns.list`."""

    id: str
    status: str  # SUCCESSFUL | FAILED | SKIPPED | ENQUEUED | RUNNING | OVERDUE | DELETED | ...
    type: str  # AUTOMATED | ON_DEMAND
    end_time: datetime | None = None
    window_start_time: datetime | None = None
    enqueued_time: datetime | None = None
    error_message: str = ""
    error_code: str = ""

    @property
    def at(self) -> datetime | None:
        """When it ended, or for a run that never ran (SKIPPED) or has not ended, when it was due."""
        return self.end_time or self.window_start_time or self.enqueued_time

    @property
    def error(self) -> str:
        return ": ".join(part for part in (self.error_code, self.error_message) if part)

    @property
    def kind(self) -> str:
        """"automated" or "on-demand", as gcloud lists them."""
        return self.type.lower().replace("_", "-") or "backup"


@dataclass(frozen=True)
class RecoveryTime:
    """`getLatestRecoveryTime`'s answer; `error` says why the API would not give one for this
    instance (it answered 400 or 412: not supported for it), when it was asked."""

    latest: datetime | None
    earliest: datetime | None = None
    error: str = ""


@dataclass(frozen=True)
class CloudSqlState:
    """Everything read about one instance. `recovery` is None when point-in-time recovery is off
    (nothing to ask); `runs_truncated` when more backup runs exist than were listed."""

    instance: CloudSqlInstance
    backup_runs: tuple[BackupRun, ...]
    recovery: RecoveryTime | None = None
    runs_truncated: bool = False


def parse_time(value: str | None) -> datetime | None:
    """The API's RFC 3339 timestamps ("2012-11-15T16:19:00.094Z", nanoseconds allowed), UTC."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {value!r}")
    return moment


def instance_from_json(instance: dict[str, Any]) -> CloudSqlInstance:
    """A DatabaseInstance of `instances.get`. Raises KeyError, ValueError or TypeError on JSON that
    is not one (no name or state)."""
    settings = instance.get("settings") or {}
    backup = settings.get("backupConfiguration") or {}
    retention = backup.get("backupRetentionSettings") or {}
    days = backup.get("transactionLogRetentionDays")
    retained = retention.get("retainedBackups")
    return CloudSqlInstance(
        name=instance["name"],
        state=instance["state"],
        database_version=instance.get("databaseVersion") or "",
        activation_policy=settings.get("activationPolicy") or "",
        instance_type=instance.get("instanceType") or "",
        master_instance_name=instance.get("masterInstanceName") or "",
        suspension_reasons=tuple(instance.get("suspensionReason") or ()),
        backups_enabled=bool(backup.get("enabled")),
        point_in_time_recovery_enabled=bool(backup.get("pointInTimeRecoveryEnabled")),
        binary_log_enabled=bool(backup.get("binaryLogEnabled")),
        transaction_log_retention_days=int(days) if days is not None else None,
        retained_backups=int(retained) if retained is not None else None,
        backup_start_time=backup.get("startTime") or "",
    )


def backup_run_from_json(run: dict[str, Any]) -> BackupRun:
    error = run.get("error") or {}
    return BackupRun(
        id=str(run["id"]),
        status=run.get("status") or "",
        type=run.get("type") or "",
        end_time=parse_time(run.get("endTime")),
        window_start_time=parse_time(run.get("windowStartTime")),
        enqueued_time=parse_time(run.get("enqueuedTime")),
        error_message=error.get("message") or "",
        error_code=error.get("code") or "",
    )


def cloud_sql_state_from_json(instance: dict[str, Any], backup_runs: list[dict[str, Any]],
                              recovery: dict[str, Any] | None = None, recovery_error: str = "", *,
                              runs_truncated: bool = False) -> CloudSqlState:
    """The state from the API's answers. `recovery`: getLatestRecoveryTime's answer, None when it
    was not asked (or `recovery_error` says why it could not be). Raises KeyError, ValueError or
    TypeError on JSON that is not the API's."""
    parsed = instance_from_json(instance)
    time = None
    if recovery is not None or recovery_error:
        recovery = recovery or {}
        time = RecoveryTime(parse_time(recovery.get("latestRecoveryTime")),
                            parse_time(recovery.get("earliestRecoveryTime")), recovery_error)
    return CloudSqlState(parsed, tuple(backup_run_from_json(r) for r in backup_runs), time, runs_truncated)


# --- the decision ------------------------------------------------------------------------------

def assess_cloud_sql(config: CloudSqlConfig, state: CloudSqlState, now: datetime) -> list[Finding]:
    """Three findings, one per check (`cloud-sql-instance`, `cloud-sql-backups`,
    `cloud-sql-pitr`), each OK when healthy; see the module's docstring for what each judges."""
    return [assess_instance(config, state.instance),
            assess_backups(config, state, now),
            assess_point_in_time_recovery(config, state.instance, state.recovery, now)]


def cloud_sql_unreadable(config: CloudSqlConfig, error: Exception) -> Finding:
    """The finding for an instance the Admin API would not describe (permission denied, not
    found, unreachable): critical, of the instance check. A `CloudSqlError` carries its hint."""
    hint = getattr(error, "hint", "") or (f"{_gcloud(config, f'instances describe {config.instance}')} "
                                          "as this host's identity: does it work?")
    return Finding(INSTANCE_CHECK, config.subject, Severity.CRITICAL, str(error), hint)


def _age(delta: timedelta) -> str:
    """Hours under three days ("26h47m", not "1d2h"): beside a limit such as 26h, the two must not
    read the same when one is over the other."""
    if timedelta(hours=1) <= delta < timedelta(days=3):
        hours, minutes = divmod(int(delta.total_seconds()) // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return format_duration(delta)


def _gcloud(config: CloudSqlConfig, command: str) -> str:
    return f"gcloud sql {command} --project={config.project}"


def assess_instance(config: CloudSqlConfig, instance: CloudSqlInstance) -> Finding:
    """RUNNABLE and not stopped is OK; see `_CRITICAL_STATES` for how the other states weigh."""
    what = f"{instance.database_version or 'unknown version'}, activation policy {instance.activation_policy or '-'}"
    names = {"instance": config.instance, "project": config.project,
             "describe": _gcloud(config, f"instances describe {config.instance}")}
    if instance.state == "RUNNABLE" and instance.is_stopped:
        # RUNNABLE with activation policy NEVER is an instance its owner stopped: Cloud SQL takes
        # no automated backups of a stopped instance, and point-in-time recovery stops with it.
        return Finding(INSTANCE_CHECK, config.subject, Severity.CRITICAL,
                       f"{config.subject} is stopped (activation policy NEVER): no automated backups are taken",
                       f"start it: {_gcloud(config, f'instances patch {config.instance} --activation-policy=ALWAYS')}; "
                       "if it was retired on purpose, remove it from [[cloud_sql]]")
    if instance.state == "RUNNABLE":
        return Finding(INSTANCE_CHECK, config.subject, Severity.OK, f"{config.subject} is RUNNABLE ({what})")
    severity = Severity.CRITICAL if instance.state in _CRITICAL_STATES else Severity.WARNING
    reasons = f" (suspension reason: {', '.join(instance.suspension_reasons)})" if instance.suspension_reasons else ""
    hint = _STATE_HINTS.get(instance.state, "{describe}: what is it doing? Backups are taken of RUNNABLE "
                                            "instances only").format(**names)
    return Finding(INSTANCE_CHECK, config.subject, severity,
                   f"{config.subject} is {instance.state or 'in no state'}{reasons}, not RUNNABLE ({what})", hint)


def backup_run_limit(rpo: timedelta) -> timedelta:
    """How old the newest successful backup run may be: the RPO, but never under a daily
    schedule's `DAILY_BACKUP_LIMIT` (a shorter RPO is judged by point-in-time recovery)."""
    return rpo if rpo >= ONE_DAY else max(rpo, DAILY_BACKUP_LIMIT)


def _newest(runs, key):
    dated = [r for r in runs if key(r) is not None]
    return max(dated, key=key, default=None)


def assess_backups(config: CloudSqlConfig, state: CloudSqlState, now: datetime) -> Finding:
    """Critical: automated backups disabled; the newest ended automated run FAILED or SKIPPED
    (named with its error); no successful run; the newest successful run (of any type: an
    on-demand backup restores as well) older than `backup_run_limit(rpo)`. A warning: the newest
    automated run is OVERDUE. A failed on-demand run alone is an operator's, not the schedule's:
    it is not judged."""
    instance, runs = state.instance, state.backup_runs
    subject, limit = config.subject, backup_run_limit(config.rpo)
    listed = f"{len(runs)}{'+' if state.runs_truncated else ''} run{'' if len(runs) == 1 else 's'} listed"
    keeps = (f"keeps {instance.retained_backups} automated backups" if instance.retained_backups is not None
             else "retention not reported")
    runs_list = _gcloud(config, f"backups list --instance={config.instance}")
    problems: list[tuple[Severity, str, str]] = []

    if not instance.backups_enabled:
        hint = f"enable them: {_gcloud(config, f'instances patch {config.instance} --backup-start-time=HH:MM')} (UTC)"
        if instance.instance_type == "READ_REPLICA_INSTANCE":
            hint = (f"it is a read replica (of {instance.master_instance_name or 'its primary'}): replicas have no "
                    "backups of their own; configure the primary in [[cloud_sql]] instead")
        problems.append((Severity.CRITICAL, "automated backups are disabled", hint))

    automated = [r for r in runs if r.type == "AUTOMATED"]
    ended = _newest([r for r in (automated or runs) if r.status in _ENDED], lambda r: r.at)
    if ended is not None and ended.status in ("FAILED", "SKIPPED"):
        when = f" at {ended.at:%Y-%m-%d %H:%M}Z ({_age(now - ended.at)} ago)" if ended.at else ""
        why = ("was the instance stopped or busy with another operation in its backup window? "
               f"{_gcloud(config, f'operations list --instance={config.instance} --limit=10')}"
               if ended.status == "SKIPPED" else
               f"why it failed: {_gcloud(config, f'backups describe {ended.id} --instance={config.instance}')}")
        error = f": {ended.error}" if ended.error else ""
        problems.append((Severity.CRITICAL, f"the newest {ended.kind} run {ended.id}{when} is {ended.status}{error}",
                         why))
    newest_run = _newest(automated, lambda r: r.enqueued_time or r.window_start_time)
    if newest_run is not None and newest_run.status == "OVERDUE":
        problems.append((Severity.WARNING, f"the automated run {newest_run.id} is OVERDUE (not started in its window)",
                         runs_list))

    success = _newest([r for r in runs if r.status == "SUCCESSFUL"], lambda r: r.end_time or r.at)
    age = None
    if success is None:
        window = f" (window starts {instance.backup_start_time} UTC)" if instance.backup_start_time else ""
        problems.append((Severity.CRITICAL, "no successful backup run listed",
                         f"{runs_list}; a new instance's first automated backup runs in its backup window{window}"))
    else:
        age = now - (success.end_time or success.at)
        if age > limit:
            why = "the RPO" if limit == config.rpo else (
                f"a day's automated backups; the {_age(config.rpo)} RPO is judged by point-in-time recovery")
            problems.append((Severity.CRITICAL, f"the newest successful backup ended {_age(age)} ago "
                             f"({(success.end_time or success.at):%Y-%m-%d %H:%M}Z); limit {_age(limit)} "
                             f"({why})", f"{runs_list}: are the automated runs failing or skipped?"))

    successful = sum(1 for r in runs if r.status == "SUCCESSFUL")
    facts = f"{listed}, {successful} successful; Cloud SQL {keeps}"
    if not problems:
        return Finding(BACKUPS_CHECK, subject, Severity.OK,
                       f"{subject}: newest successful backup ended {_age(age)} ago "
                       f"({success.kind} run {success.id}); {facts}")
    severity = Severity.worst(p[0] for p in problems)
    hints = list(dict.fromkeys(p[2] for p in problems))
    if success is None or age > limit:
        # However the schedule is fixed, an on-demand backup restores the RPO at once.
        hints.append(f"take a backup now: {_gcloud(config, f'backups create --instance={config.instance}')}")
    what = "; ".join(p[1] for p in problems)
    return Finding(BACKUPS_CHECK, subject, severity, f"{subject}: {what} — {facts}", "; ".join(hints))


def assess_point_in_time_recovery(config: CloudSqlConfig, instance: CloudSqlInstance,
                                  recovery: RecoveryTime | None, now: datetime) -> Finding:
    """With an RPO under a day: critical when point-in-time recovery is off, or when its latest
    recovery time is older than the RPO; a warning when it is on but the API gave no recovery
    time. With an RPO of a day or more the daily backups meet it: PITR off is OK (said so), and a
    lagging recovery time only a warning."""
    subject, rpo = config.subject, config.rpo
    needed = rpo < ONE_DAY
    flag = "--enable-bin-log" if instance.is_mysql else "--enable-point-in-time-recovery"
    logs = (f"transaction logs kept {instance.transaction_log_retention_days}d"
            if instance.transaction_log_retention_days is not None else "transaction log retention not reported")
    if not instance.has_point_in_time_recovery:
        if not needed:
            return Finding(PITR_CHECK, subject, Severity.OK,
                           f"{subject}: point-in-time recovery is off; the {_age(rpo)} RPO is met by "
                           "the daily automated backups")
        return Finding(PITR_CHECK, subject, Severity.CRITICAL,
                       f"{subject}: point-in-time recovery is off, but a {_age(rpo)} RPO needs it: "
                       "automated backups are daily",
                       f"enable it: {_gcloud(config, f'instances patch {config.instance} {flag}')}"
                       + ("" if instance.backups_enabled else " (it needs automated backups enabled first)"))
    lag_hint = ("are its transaction logs being archived? "
                f"{_gcloud(config, f'instances get-latest-recovery-time {config.instance}')} and "
                f"{_gcloud(config, f'operations list --instance={config.instance} --limit=10')}")
    if recovery is None or recovery.latest is None:
        why = recovery.error if recovery is not None and recovery.error else "the API gave no latest recovery time"
        return Finding(PITR_CHECK, subject, Severity.WARNING if needed else Severity.OK,
                       f"{subject}: point-in-time recovery is on, but how far it reaches is unknown: {why}; {logs}",
                       lag_hint)
    lag = now - recovery.latest
    window = (f", back to {format_duration(now - recovery.earliest)} ago" if recovery.earliest is not None else "")
    seen = (f"latest recovery time {recovery.latest:%Y-%m-%d %H:%M:%S}Z ({_age(lag)} ago){window}; "
            f"RPO {_age(rpo)}; {logs}")
    if lag > rpo:
        severity = Severity.CRITICAL if needed else Severity.WARNING
        tail = "" if needed else f"; a warning: with a {_age(rpo)} RPO the daily backups are what must meet it"
        return Finding(PITR_CHECK, subject, severity,
                       f"{subject}: point-in-time recovery lags {_age(lag)} behind, more than the RPO — "
                       f"{seen}{tail}", lag_hint)
    return Finding(PITR_CHECK, subject, Severity.OK, f"{subject}: point-in-time recovery is on — {seen}")
