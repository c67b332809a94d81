"""DR drill decisions and the drill record. Pure: timings and findings in, findings and markdown out."""

from __future__ import annotations

from datetime import datetime, timedelta

from maint.durations import format_duration
from maint.report import Finding, Severity

NEAR_MISS = 0.80  # within 80% of a target is a warning: the next drill may miss it


def assess_objective(check: str, subject: str, measured: timedelta, target: timedelta) -> Finding:
    label = check.upper()
    message = f"{label} {format_duration(measured)} against a target of {format_duration(target)}"
    if measured > target:
        return Finding(check, subject, Severity.CRITICAL, message + ": missed",
                       _HINTS[check])
    if measured > target * NEAR_MISS:
        return Finding(check, subject, Severity.WARNING, message + f": within {NEAR_MISS:.0%} of it", _HINTS[check])
    return Finding(check, subject, Severity.OK, message + ": met")


_HINTS = {
    "rto": "restore is too slow for the target: more pg_restore jobs, a bigger scratch server, a closer "
           "store, or physical backups (pgBackRest, WAL-G) for this database",
    "rpo": "backups are too far apart for the target: back up more often, or add WAL archiving for "
           "point-in-time recovery",
}


def action_items(findings: list[Finding]) -> list[str]:
    """One action item per finding that failed or came close, in the post-mortem's words."""
    items = []
    for f in findings:
        if f.severity is Severity.OK:
            continue
        tag = "MUST" if f.severity is Severity.CRITICAL else "SHOULD"
        items.append(f"[{tag}] {f.check} ({f.subject}): {f.message}. Next: {f.hint or 'investigate'}")
    return items


def drill_record(*, database: str, store: str, t0: datetime, timeline: list[tuple[datetime, str]],
                 rto: timedelta | None, rto_target: timedelta, rpo: timedelta | None, rpo_target: timedelta,
                 findings: list[Finding], flow_run_url: str | None = None) -> str:
    """The drill written up in the shape of the seeds' post-mortem template."""
    worst = Severity.worst(f.severity for f in findings)
    result = {Severity.OK: "PASSED: targets met", Severity.WARNING: "PASSED, with near misses",
              Severity.CRITICAL: "FAILED"}[worst]
    lines = [f"# DR drill: loss of database {database}", "",
             "## Summary", "",
             f"Simulated loss of `{database}` declared at {t0.isoformat(timespec='seconds')}; recovered from the "
             f"newest backup in `{store}` into a scratch database. Result: **{result}**.", ""]
    if flow_run_url:
        lines += [f"Flow run: {flow_run_url}", ""]
    lines += ["## Timeline", "", "| time | +elapsed | event |", "|---|---|---|"]
    for moment, event in timeline:
        lines.append(f"| {moment.isoformat(timespec='seconds')} | +{format_duration(moment - t0)} | {event} |")
    lines += ["", "## RTO / RPO", "", "| objective | achieved | target |", "|---|---|---|",
              f"| RTO (loss declared to validated restore) | {format_duration(rto) if rto else 'not reached'} | "
              f"{format_duration(rto_target)} |",
              f"| RPO (data lost: loss minus backup snapshot) | {format_duration(rpo) if rpo else 'unknown'} | "
              f"{format_duration(rpo_target)} |", "",
              "## Result", "", result, ""]
    for f in findings:
        if f.severity is not Severity.OK:
            lines.append(f"- {f.severity.value}: {f.check} {f.subject}: {f.message}")
    items = action_items(findings)
    lines += ["", "## Action items", ""] + ([f"- {item}" for item in items] or ["- none: repeat next month"])
    return "\n".join(lines) + "\n"
