"""Velero's cluster backups, and which of them need a human.

Pure: the velero.io/v1 custom objects come in as the API's JSON (plain dicts, Velero's camelCase
field names: pkg/apis/velero/v1/backup_types.go, backupstoragelocation_types.go,
schedule_types.go), findings go out. No I/O and no clock: `now` is a parameter.

Checks and subjects. A page is keyed by (duty, check, subject) and resolved only by a later run
that reports the same check and subject below the paging severity (maint/paging.py), so every
subject here is one that the next healthy run reports again as OK, never a backup's name (the
next night's backup has another name, and would leave the page open for ever):

- `velero-backup`, `velero NS`: the newest Completed backup (by completionTimestamp) is within
  the RPO; older, or none at all, is critical. With `[velero].schedules` named, only their
  backups count.
- `velero-latest`, `velero NS/schedule NAME` per schedule, and `velero NS` for the backups no
  schedule made (no `velero.io/schedule-name` label, or a schedule that no longer exists): the
  newest *finished* backup of that group, named in the message (`velero NS/BACKUP`). Per schedule
  because one group's success must not hide another's failure (an hourly schedule's Completed
  backups would otherwise resolve the nightly's Failed one within the hour). PartiallyFailed is
  a warning with its error and warning counts; Failed (failureReason) and FailedValidation
  (validationErrors) are critical; volume or CSI snapshots or item operations attempted but not
  completed, and failed hooks, are a warning. The group's next backup that completes resolves it.
- `velero-in-progress`, `velero NS`: backups still running (New, Queued, ... Finalizing) for
  longer than `in_progress_limit`, all named in one warning.
- `velero-location`, `velero NS/location NAME`: not Available is critical, with Velero's message;
  and `velero NS`: no location at all is critical, no default location a warning.
- `velero-schedule`, `velero NS/schedule NAME`: a named schedule that does not exist or failed
  validation is critical; paused, or its lastBackup older than the RPO, a warning; and
  `velero NS`: no schedule at all is a warning.

A location or schedule that is deleted reports nothing any more: the flow marks `VELERO_CHECKS`
exhaustive (`Report.exhaustive_checks`) when the listing succeeded, so its open page resolves too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from maint.config import VeleroConfig
from maint.durations import format_duration
from maint.pods import parse_time
from maint.report import Finding, Severity

SCHEDULE_LABEL = "velero.io/schedule-name"
FINISHED = ("Completed", "PartiallyFailed", "Failed", "FailedValidation")
# Not finished yet; Queued and ReadyToStart since Velero 1.17. "Deleting" is neither.
RUNNING = ("", "New", "Queued", "ReadyToStart", "InProgress", "WaitingForPluginOperations",
           "WaitingForPluginOperationsPartiallyFailed", "Finalizing", "FinalizingPartiallyFailed")
VELERO_CHECKS = frozenset({"velero-backup", "velero-latest", "velero-in-progress", "velero-location",
                           "velero-schedule"})


def _count(status: dict, key: str) -> int:
    value = status.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"status.{key} is not a count: {value!r}")
    return value


def _meta(obj: dict[str, Any], namespace: str | None) -> tuple[str, str, dict]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or namespace or "", meta["name"], meta


def _errors(status: dict) -> tuple[str, ...]:
    return tuple(str(e) for e in status.get("validationErrors") or ())


def _cli(namespace: str, *words: str) -> str:
    """A velero CLI command for this namespace (`-n`: the CLI's default may be another)."""
    return f"velero {' '.join(words)} -n {namespace}"


@dataclass(frozen=True)
class VeleroBackup:
    namespace: str
    name: str
    phase: str
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime | None = None
    schedule: str | None = None  # the velero.io/schedule-name label
    storage_location: str | None = None
    errors: int = 0
    warnings: int = 0
    failure_reason: str = ""
    validation_errors: tuple[str, ...] = ()
    volume_snapshots: tuple[int, int] = (0, 0)  # attempted, completed
    csi_snapshots: tuple[int, int] = (0, 0)  # attempted, completed
    item_operations: tuple[int, int, int] = (0, 0, 0)  # attempted, completed, failed
    hooks: tuple[int, int] = (0, 0)  # attempted, failed

    @property
    def subject(self) -> str:
        return f"velero {self.namespace}/{self.name}"

    @property
    def finished_at(self) -> datetime | None:
        """Completion time; FailedValidation has none (nor a start), so its creation stands in."""
        return self.completed_at or self.started_at or self.created_at

    def shortfalls(self) -> list[str]:
        """What it attempted and did not complete, in the words of `velero backup describe`."""
        found = []
        for (attempted, completed), what in ((self.volume_snapshots, "volume snapshots"),
                                             (self.csi_snapshots, "CSI volume snapshots")):
            if attempted > completed:
                found.append(f"{completed} of {attempted} {what} completed")
        attempted, completed, failed = self.item_operations
        if attempted > completed or failed:
            found.append(f"{completed} of {attempted} backup item operations completed"
                         + (f", {failed} failed" if failed else ""))
        if self.hooks[1]:
            found.append(f"{self.hooks[1]} of {self.hooks[0]} hooks failed")
        return found


@dataclass(frozen=True)
class VeleroLocation:
    namespace: str
    name: str
    phase: str  # Available | Unavailable | "" (not validated yet)
    message: str = ""
    last_validated: datetime | None = None
    is_default: bool = False
    bucket: str = ""
    prefix: str = ""
    credential: str = ""  # the Secret spec.credential names; "": the velero server's own (cloud-credentials)

    @property
    def where(self) -> str:
        return f"bucket {self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass(frozen=True)
class VeleroSchedule:
    namespace: str
    name: str
    cron: str
    paused: bool
    phase: str  # New | Enabled | FailedValidation
    last_backup: datetime | None
    created_at: datetime | None
    validation_errors: tuple[str, ...] = ()


def backup_from_json(obj: dict[str, Any], namespace: str | None = None) -> VeleroBackup:
    """One item of a velero.io/v1 BackupList. KeyError or ValueError on what is not a Backup."""
    ns, name, meta = _meta(obj, namespace)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    hooks = status.get("hookStatus") or {}
    return VeleroBackup(
        namespace=ns, name=name, phase=str(status.get("phase") or ""),
        created_at=parse_time(meta.get("creationTimestamp")), started_at=parse_time(status.get("startTimestamp")),
        completed_at=parse_time(status.get("completionTimestamp")), expires_at=parse_time(status.get("expiration")),
        schedule=(meta.get("labels") or {}).get(SCHEDULE_LABEL) or None,
        storage_location=spec.get("storageLocation") or None,
        errors=_count(status, "errors"), warnings=_count(status, "warnings"),
        failure_reason=str(status.get("failureReason") or ""), validation_errors=_errors(status),
        volume_snapshots=(_count(status, "volumeSnapshotsAttempted"), _count(status, "volumeSnapshotsCompleted")),
        csi_snapshots=(_count(status, "csiVolumeSnapshotsAttempted"), _count(status, "csiVolumeSnapshotsCompleted")),
        item_operations=(_count(status, "backupItemOperationsAttempted"),
                         _count(status, "backupItemOperationsCompleted"), _count(status, "backupItemOperationsFailed")),
        hooks=(_count(hooks, "hooksAttempted"), _count(hooks, "hooksFailed")))


def location_from_json(obj: dict[str, Any], namespace: str | None = None) -> VeleroLocation:
    """One item of a velero.io/v1 BackupStorageLocationList."""
    ns, name, _ = _meta(obj, namespace)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    storage = spec.get("objectStorage") or {}
    return VeleroLocation(ns, name, str(status.get("phase") or ""), str(status.get("message") or ""),
                          parse_time(status.get("lastValidationTime")), bool(spec.get("default")),
                          str(storage.get("bucket") or ""), str(storage.get("prefix") or ""),
                          str((spec.get("credential") or {}).get("name") or ""))


def schedule_from_json(obj: dict[str, Any], namespace: str | None = None) -> VeleroSchedule:
    """One item of a velero.io/v1 ScheduleList."""
    ns, name, meta = _meta(obj, namespace)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return VeleroSchedule(ns, name, str(spec.get("schedule") or ""), bool(spec.get("paused")),
                          str(status.get("phase") or ""), parse_time(status.get("lastBackup")),
                          parse_time(meta.get("creationTimestamp")), _errors(status))


# --- the decision --------------------------------------------------------------------------------

def assess_velero(config: VeleroConfig, backups: list[dict], locations: list[dict], schedules: list[dict],
                  now: datetime) -> list[Finding]:
    """Every check above over one namespace's Backups, BackupStorageLocations and Schedules
    (the API's JSON items); every subject gets exactly one finding, OK when healthy."""
    ns = config.namespace
    parsed = [backup_from_json(b, ns) for b in backups]
    stores = sorted((location_from_json(o, ns) for o in locations), key=lambda o: o.name)
    existing = {s.name: s for s in (schedule_from_json(o, ns) for o in schedules)}
    names = list(dict.fromkeys(config.schedules)) or sorted(existing)
    groups: dict[str, list[VeleroBackup]] = {name: [] for name in names}
    unscheduled: list[VeleroBackup] = []
    for backup in parsed:
        if backup.schedule in groups:
            groups[backup.schedule].append(backup)
        elif backup.schedule is None or backup.schedule not in existing:
            unscheduled.append(backup)  # by hand, or its schedule was deleted
        # else: a schedule [velero].schedules leaves out
    counted = [b for members in groups.values() for b in members] if config.schedules else parsed
    findings = [_freshness(config, counted, now)]
    findings += [_latest(f"velero {ns}/schedule {name}", f"schedule {name}", members, now)
                 for name, members in groups.items()]
    findings.append(_latest(f"velero {ns}", "without a schedule", unscheduled, now))
    findings.append(_in_progress(config, parsed, now))
    findings += _locations(ns, stores, now)
    findings += _schedules(config, names, existing, now)
    return findings


def velero_unreadable(config: VeleroConfig, error: Exception) -> Finding:
    """The listing failed (API unreachable, forbidden, CRDs missing): nothing is known of the
    backups, which is as bad as having none. The error names the server and what to grant."""
    return Finding("velero-backup", f"velero {config.namespace}", Severity.CRITICAL,
                   f"cannot read Velero's backups: {error}",
                   "is Velero installed in this namespace, and may maint get and list backups, "
                   "backupstoragelocations and schedules (API group velero.io) there? README: Velero")


def _age(now: datetime, then: datetime) -> str:
    return format_duration(now - then)


def _freshness(config: VeleroConfig, backups: list[VeleroBackup], now: datetime) -> Finding:
    ns, rpo = config.namespace, config.rpo
    which = f" of schedules {', '.join(config.schedules)}" if config.schedules else ""
    completed = [b for b in backups if b.phase == "Completed" and b.completed_at is not None
                 and not (b.expires_at is not None and b.expires_at <= now)]  # expired: GC deletes it
    look = (f"{_cli(ns, 'backup', 'get')}: are the newer ones failing, or is no schedule running "
            f"({_cli(ns, 'schedule', 'get')}; kubectl -n {ns} get deploy velero)?")
    if not completed:
        phases: dict[str, int] = {}
        for b in backups:
            phases[b.phase or "no phase"] = phases.get(b.phase or "no phase", 0) + 1
        seen = ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none at all"
        return Finding("velero-backup", f"velero {ns}", Severity.CRITICAL,
                       f"no Completed backup{which} in namespace {ns} (backups: {seen}); RPO is "
                       f"{format_duration(rpo)}", look)
    newest = max(completed, key=lambda b: (b.completed_at, b.name))
    age = now - newest.completed_at
    text = f"newest Completed backup{which} {newest.subject} finished {format_duration(age)} ago"
    if age > rpo:
        return Finding("velero-backup", f"velero {ns}", Severity.CRITICAL,
                       f"{text}; RPO is {format_duration(rpo)}", look)
    return Finding("velero-backup", f"velero {ns}", Severity.OK, f"{text} (RPO {format_duration(rpo)})")


def _latest(subject: str, what: str, backups: list[VeleroBackup], now: datetime) -> Finding:
    finished = [b for b in backups if b.phase in FINISHED and b.finished_at is not None]
    if not finished:
        return Finding("velero-latest", subject, Severity.OK, f"no finished backup {what} yet")
    b = max(finished, key=lambda b: (b.finished_at, b.name))
    ns = b.namespace
    seen = f"newest finished backup {what}: {b.subject} {b.phase} {_age(now, b.finished_at)} ago"
    describe = _cli(ns, "backup", "describe", b.name, "--details")
    problems: list[str] = []
    hints: list[str] = []
    severity = Severity.OK
    if b.phase == "PartiallyFailed":
        severity = Severity.WARNING
        problems.append(f"{b.errors} errors, {b.warnings} warnings")
        hints.append(f"{_cli(ns, 'backup', 'logs', b.name)} | grep -iE 'level=(error|warn)'; {describe}")
    elif b.phase == "Failed":
        severity = Severity.CRITICAL
        problems.append(f"failureReason: {b.failure_reason or 'none given'}")
        hints.append(f"{_cli(ns, 'backup', 'logs', b.name)}; {describe}")
    elif b.phase == "FailedValidation":
        severity = Severity.CRITICAL
        problems.append("validationErrors: " + ("; ".join(b.validation_errors) or "none given"))
        hints.append(f"{describe}: fix what it names (the schedule's template, the storage location or a "
                     "volume snapshot location it refers to)")
    shortfalls = b.shortfalls()
    if shortfalls:
        severity = Severity.worst([severity, Severity.WARNING])
        problems += shortfalls
        if not hints:
            hints.append(f"{describe}: which volumes or items, and why; {_cli(ns, 'backup', 'logs', b.name)}")
    if severity is Severity.OK:
        return Finding("velero-latest", subject, severity, seen)
    then = ("the schedule's next backup that completes resolves this" if what.startswith("schedule")
            else "the next backup made without a schedule that completes resolves this, or "
                 f"{_cli(ns, 'backup', 'delete', b.name)} once it is understood")
    return Finding("velero-latest", subject, severity, f"{seen}: {'; '.join(problems)}",
                   "; ".join(hints) + f"; {then}")


def _in_progress(config: VeleroConfig, backups: list[VeleroBackup], now: datetime) -> Finding:
    ns, limit = config.namespace, config.in_progress_limit
    running = [b for b in backups if b.phase in RUNNING]
    stuck = sorted((b for b in running if (b.started_at or b.created_at) is not None
                    and now - (b.started_at or b.created_at) > limit),
                   key=lambda b: (b.started_at or b.created_at, b.name))
    if not stuck:
        return Finding("velero-in-progress", f"velero {ns}", Severity.OK,
                       f"no backup running longer than {format_duration(limit)} ({len(running)} running)")
    named = ", ".join(f"{b.subject} {b.phase or 'with no phase'} for {_age(now, b.started_at or b.created_at)}"
                      for b in stuck)
    first = stuck[0].name
    return Finding("velero-in-progress", f"velero {ns}", Severity.WARNING,
                   f"{len(stuck)} backup(s) running longer than in_progress_limit {format_duration(limit)}: {named}",
                   f"{_cli(ns, 'backup', 'describe', first, '--details')}; kubectl -n {ns} logs deploy/velero | "
                   f"grep {first}: is it waiting on a volume snapshot or a data upload (kubectl -n {ns} get "
                   "datauploads,podvolumebackups), or is the velero server restarting?")


def _locations(ns: str, locations: list[VeleroLocation], now: datetime) -> list[Finding]:
    findings = []
    for loc in locations:
        subject = f"velero {ns}/location {loc.name}"
        about = loc.where + (", the default" if loc.is_default else "")
        validated = f"last validated {_age(now, loc.last_validated)} ago" if loc.last_validated else "never validated"
        if loc.phase == "Available":
            findings.append(Finding("velero-location", subject, Severity.OK, f"Available ({about}; {validated})"))
            continue
        phase = loc.phase or "not validated yet (no phase)"
        findings.append(Finding(
            "velero-location", subject, Severity.CRITICAL,
            f"{phase}: {loc.message or 'no message'} ({about}; {validated})",
            f"{_cli(ns, 'backup-location', 'get')}; does {loc.where} exist, and can the credentials "
            f"(kubectl -n {ns} get secret {loc.credential or 'cloud-credentials'}) read and write it? Velero "
            "revalidates it every minute"))
    summary = f"velero {ns}"
    if not locations:
        findings.append(Finding("velero-location", summary, Severity.CRITICAL,
                                f"no BackupStorageLocation in namespace {ns}: Velero has nowhere to write backups",
                                f"{_cli(ns, 'backup-location', 'get')}; is [velero].namespace the one Velero "
                                "runs in? Else create one (velero backup-location create)"))
    elif not any(loc.is_default for loc in locations):
        findings.append(Finding("velero-location", summary, Severity.WARNING,
                                f"{len(locations)} storage locations, none the default: a backup that names no "
                                "storageLocation fails validation",
                                _cli(ns, "backup-location", "set", locations[0].name, "--default")))
    else:
        available = sum(loc.phase == "Available" for loc in locations)
        findings.append(Finding("velero-location", summary, Severity.OK,
                                f"{len(locations)} storage locations, {available} Available"))
    return findings


def _schedules(config: VeleroConfig, names: list[str], existing: dict[str, VeleroSchedule],
               now: datetime) -> list[Finding]:
    ns, rpo = config.namespace, config.rpo
    findings = []
    for name in names:
        subject = f"velero {ns}/schedule {name}"
        s = existing.get(name)
        if s is None:
            findings.append(Finding("velero-schedule", subject, Severity.CRITICAL,
                                    f"Schedule {name} does not exist in namespace {ns} ([velero].schedules names it)",
                                    f"{_cli(ns, 'schedule', 'get')}: create it, or fix [velero].schedules"))
            continue
        problems: list[tuple[Severity, str, str]] = []
        if s.phase == "FailedValidation":
            problems.append((Severity.CRITICAL, "FailedValidation: " + ("; ".join(s.validation_errors) or "none given"),
                             f"{_cli(ns, 'schedule', 'describe', name)}: fix its cron or its backup template"))
        if s.paused:
            problems.append((Severity.WARNING, "paused: it creates no backups", _cli(ns, "schedule", "unpause", name)))
        since = s.last_backup or s.created_at
        if since is not None and now - since > rpo:
            seen = (f"last backup created {_age(now, s.last_backup)} ago" if s.last_backup
                    else f"no backup created since the schedule was {_age(now, s.created_at)} ago")
            problems.append((Severity.WARNING, f"{seen}, more than the RPO {format_duration(rpo)} (cron {s.cron!r})",
                             f"is the velero server running (kubectl -n {ns} get deploy velero)? A cron that "
                             "fires less often than the RPO needs a larger [velero].rpo"))
        last = f"last backup {_age(now, s.last_backup)} ago" if s.last_backup else "no backup yet"
        if not problems:
            findings.append(Finding("velero-schedule", subject, Severity.OK,
                                    f"{s.phase or 'New'}, cron {s.cron!r}, {last}"))
            continue
        findings.append(Finding("velero-schedule", subject, Severity.worst(p[0] for p in problems),
                                "; ".join(p[1] for p in problems), "; ".join(p[2] for p in problems)))
    flagged = sum(f.severity is not Severity.OK for f in findings)
    if names:
        findings.append(Finding("velero-schedule", f"velero {ns}", Severity.OK,
                                f"{len(names)} schedules, {flagged} flagged"))
    else:
        findings.append(Finding("velero-schedule", f"velero {ns}", Severity.WARNING,
                                f"no Schedule in namespace {ns}: backups are made only by hand",
                                f"{_cli(ns, 'schedule', 'create', 'daily', '--schedule', repr('0 1 * * *'))}"))
    return findings
