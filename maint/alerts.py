"""Alertmanager's firing alerts, and which of them the morning check reports.

Pure: the v2 API's JSON comes in (`GettableAlert` objects as plain dicts), findings go out. No
I/O and no clock: `now` is a parameter. The task `maint.tasks.alertmanager.list_alerts` does
the I/O.

Findings: one per firing alert (check `ALERT_CHECK`), its severity from the alert's severity
label, and one OK summary per Alertmanager (check "alertmanager", subject "alertmanager HOST")
counting what it holds. An alert that is silenced or inhibited, or whose severity is one of
`ignore_values`, gets no finding of its own: it is counted in the summary and never pages,
since someone already decided it needs nobody now (so is one muted by a time interval).

Subjects: `alertmanager HOST ALERTNAME{label="value",...}`, the alert's labels without its
alertname and severity, as PromQL writes them. They are fixed while the alert fires (an alert's
labels are its identity, its fingerprint is their hash), say what is wrong where, and paste
into Prometheus. The severity is left out so that a rule pair firing one problem at warning and
at critical is one finding (the worse) and one page, which resolves once it drops below
`page_on`, instead of two findings of one subject. The flow marks `ALERT_CHECK` exhaustive
(`Report.exhaustive_checks`) when every Alertmanager answered, so the page of an alert that
stopped firing, or was silenced since, is resolved by its absence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from maint.config import AlertmanagerConfig
from maint.durations import format_duration
from maint.report import Finding, Severity

ALERT_CHECK = "alert"
ALERTMANAGER_CHECK = "alertmanager"
_NAMED = 5  # ignored alerts named in the summary
_SUMMARY_CHARS = 300


@dataclass(frozen=True)
class Alert:
    """One alert of `GET /api/v2/alerts`."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    updated_at: datetime | None = None
    generator_url: str = ""
    state: str = "active"  # active | suppressed | unprocessed
    silenced_by: tuple[str, ...] = ()  # silence IDs
    inhibited_by: tuple[str, ...] = ()  # fingerprints of the inhibiting alerts
    muted_by: tuple[str, ...] = ()  # time intervals muting it (the API's mutedBy, Alertmanager 0.27+)
    receivers: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "") or "(no alertname)"

    @property
    def is_silenced(self) -> bool:
        return bool(self.silenced_by)

    @property
    def is_inhibited(self) -> bool:
        return bool(self.inhibited_by)

    @property
    def is_muted(self) -> bool:
        """Suppressed by anything but a silence or an inhibition: a mute time interval, or a
        reason this code does not know. Alertmanager's word is taken: it decided nobody is told."""
        return bool(self.muted_by) or self.state == "suppressed"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API ("2025-03-14T09:30:00.000Z"); None when absent or
    unreadable, which the finding then says instead of a duration."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _strings(mapping: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def alert_from_json(data: dict[str, Any]) -> Alert:
    status = data.get("status") if isinstance(data.get("status"), dict) else {}
    receivers = data.get("receivers") if isinstance(data.get("receivers"), list) else []
    return Alert(
        fingerprint=str(data.get("fingerprint") or ""),
        labels=_strings(data.get("labels")),
        annotations=_strings(data.get("annotations")),
        starts_at=parse_time(data.get("startsAt")),
        ends_at=parse_time(data.get("endsAt")),
        updated_at=parse_time(data.get("updatedAt")),
        generator_url=str(data.get("generatorURL") or ""),
        state=str(status.get("state") or "unprocessed"),
        silenced_by=tuple(map(str, status.get("silencedBy") or ())),
        inhibited_by=tuple(map(str, status.get("inhibitedBy") or ())),
        muted_by=tuple(map(str, status.get("mutedBy") or ())),
        receivers=tuple(str(r.get("name", "")) for r in receivers if isinstance(r, dict)),
    )


def display_url(url: str) -> str:
    """The URL as findings show it: without userinfo (credentials), without a trailing slash."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl().rstrip("/")


def alertmanager_subject(config: AlertmanagerConfig) -> str:
    return f"alertmanager {urlsplit(display_url(config.url)).netloc}"


def _selector(labels: dict[str, str], leave_out: set[str]) -> str:
    """`{instance="db1:9100",job="node"}` (PromQL's quoting), or "" for no labels."""
    pairs = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items())
                     if k not in leave_out)
    return f"{{{pairs}}}" if pairs else ""


def _identity(alert: Alert, config: AlertmanagerConfig) -> str:
    return alert.name + _selector(alert.labels, {"alertname", config.severity_label})


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SUMMARY_CHARS else text[:_SUMMARY_CHARS - 1] + "…"


def severity_of(alert: Alert, config: AlertmanagerConfig) -> Severity | None:
    """The finding's severity from the severity label; None for an ignored value. Values compare
    without case; a missing or unknown value is a warning (never silently dropped)."""
    value = alert.labels.get(config.severity_label, "").casefold()

    def among(values: list[str]) -> bool:
        return value in {v.casefold() for v in values}
    if among(config.critical_values):
        return Severity.CRITICAL
    if among(config.ignore_values):
        return None
    return Severity.WARNING


def _severity_words(alert: Alert, config: AlertmanagerConfig) -> str:
    value = alert.labels.get(config.severity_label)
    if value is None:
        return f"no {config.severity_label} label, taken as a warning"
    known = {v.casefold() for v in config.critical_values + config.warning_values}
    return f"{config.severity_label} {value}" + ("" if value.casefold() in known else ", taken as a warning")


def _since(alert: Alert, now: datetime) -> str:
    if alert.starts_at is None:
        return "firing (start time unknown)"
    return f"firing for {format_duration(max(now - alert.starts_at, timedelta(0)))}"


def _hint(alert: Alert, config: AlertmanagerConfig) -> str:
    steps = []
    runbook = alert.annotations.get("runbook_url") or alert.annotations.get("runbook")
    if runbook:
        steps.append(f"follow the runbook: {runbook}")
    if alert.generator_url:
        steps.append(f"the rule's graph in Prometheus: {alert.generator_url}")
    if not steps:
        # The UI's filter takes the alert's matchers: it lists this alert at every severity.
        matchers = _selector(alert.labels, {config.severity_label})
        steps.append(f"see the alert in Alertmanager: {display_url(config.url)}/#/alerts"
                     + (f"?filter={quote(matchers, safe='')}" if matchers else ""))
    return "; ".join(steps) + "; if it is expected, a silence in Alertmanager stops this page"


def _alert_finding(alerts: list[tuple[Severity, Alert]], config: AlertmanagerConfig, now: datetime) -> Finding:
    """The finding for the firing alerts of one identity, the worst first (several only when
    they differ in the severity label alone)."""
    severity, alert = alerts[0]
    message = f"{_identity(alert, config)} {_since(alert, now)} ({_severity_words(alert, config)})"
    summary = alert.annotations.get("summary") or alert.annotations.get("description")
    if summary:
        message += f": {_one_line(summary)}"
    if alert.state == "unprocessed":
        message += " [Alertmanager has not processed it yet: an inhibition may still apply]"
    others = sorted({other.labels.get(config.severity_label, "?") for _, other in alerts[1:]})
    if others:
        message += f"; also firing as {config.severity_label} {', '.join(others)}"
    return Finding(ALERT_CHECK, f"{alertmanager_subject(config)} {_identity(alert, config)}", severity,
                   message, _hint(alert, config))


def assess_alerts(config: AlertmanagerConfig, alerts: list[dict[str, Any]], now: datetime) -> list[Finding]:
    """One finding per firing alert (worst first), then the Alertmanager's OK summary.

    Firing: neither silenced, inhibited nor muted, with a severity label value not in
    `ignore_values`. An `unprocessed` alert is reported: Alertmanager has not had the chance to
    suppress it, and hiding it could hide an outage. Alertmanager's v2 API already leaves out
    resolved alerts (endsAt passed), by its own clock, so this does not judge endsAt."""
    firing: dict[str, list[tuple[Severity, Alert]]] = {}
    silenced, inhibited, muted, ignored = [], [], [], []
    for alert in map(alert_from_json, alerts):
        severity = severity_of(alert, config)
        if alert.is_silenced:
            silenced.append(alert)
        elif alert.is_inhibited:
            inhibited.append(alert)
        elif alert.is_muted:
            muted.append(alert)
        elif severity is None:
            ignored.append(alert)
        else:
            firing.setdefault(_identity(alert, config), []).append((severity, alert))
    findings = [_alert_finding(sorted(group, key=lambda pair: -pair[0].rank), config, now)
                for group in firing.values()]
    findings.sort(key=lambda f: (-f.severity.rank, f.subject))
    firing_severities = [severity for group in firing.values() for severity, _ in group]
    findings.append(_summary(config, firing_severities, silenced, inhibited, muted, ignored))
    return findings


def _summary(config: AlertmanagerConfig, firing: list[Severity], silenced: list[Alert], inhibited: list[Alert],
             muted: list[Alert], ignored: list[Alert]) -> Finding:
    total = len(firing) + len(silenced) + len(inhibited) + len(muted) + len(ignored)
    scope = f" matching {', '.join(config.matchers)}" if config.matchers else ""
    subject = alertmanager_subject(config)
    if not total:
        return Finding(ALERTMANAGER_CHECK, subject, Severity.OK, f"no alerts{scope}")
    parts = [f"{firing.count(Severity.CRITICAL)} critical and {firing.count(Severity.WARNING)} warning firing"]
    if ignored:
        names = sorted({a.name for a in ignored})
        more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
        parts.append(f"{len(ignored)} ignored by {config.severity_label} ({', '.join(names[:_NAMED])}{more})")
    suppressed = f"{len(silenced)} silenced, {len(inhibited)} inhibited and {len(muted)} muted" if muted else \
        f"{len(silenced)} silenced and {len(inhibited)} inhibited"
    parts.append(f"{suppressed} (never paged)")
    return Finding(ALERTMANAGER_CHECK, subject, Severity.OK,
                   f"{total} alert{'s' if total != 1 else ''}{scope}: {'; '.join(parts)}")


def alertmanager_unreachable(config: AlertmanagerConfig, exc: Exception) -> Finding:
    """Critical under the summary's check and subject, so the next run that reads the alerts
    resolves its page. Its alerts are unknown meanwhile: the flow must not mark `ALERT_CHECK`
    exhaustive, so their pages stay open rather than resolve unseen."""
    hint = getattr(exc, "hint", "") or (f"is Alertmanager up at {display_url(config.url)} and reachable from "
                                        "here? check its pods or service and Prometheus's alerting targets")
    return Finding(ALERTMANAGER_CHECK, alertmanager_subject(config), Severity.CRITICAL, str(exc),
                   f"{hint}; until it answers, its firing alerts are not seen here, and perhaps not notified")
