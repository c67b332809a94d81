"""Notifications: Slack incoming webhooks and the PagerDuty Events API v2, over plain httpx.

Prefect's notification blocks swallow delivery failures; these do not. A message that cannot be
delivered after a few tries raises NotificationError and fails the run, so a broken webhook is
noticed the same day rather than on the night it was needed. URLs and routing keys are secrets
and never appear in a message or an error: targets are named by their environment variable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

from maint.config import NotifyConfig
from maint.redaction import install_redaction, redact
from maint.tasks.environment import resolve_secret
from maint.errors import NotificationError
from maint.paging import (RUN_FAILED_CHECK, PagePlan, PageScope, dedup_key, open_pages_after,
                          open_pages_in_view, plan_pages)
from maint.report import Finding, Report, Severity
from maint.tasks.state import load_open_pages, save_open_pages

log = logging.getLogger("maint.notify")
install_redaction("httpx", "httpcore")
_RETRY_DELAYS = (0.5, 1.0, 2.0)
_MAX_SLACK_FINDINGS = 20


@dataclass
class Notifier:
    config: NotifyConfig

    @property
    def has_slack(self) -> bool:
        return bool(self.config.slack_webhook_url_env)

    @property
    def has_pagerduty(self) -> bool:
        return bool(self.config.pagerduty_routing_key_env)

    def _post(self, url: str, payload: dict, target: str, ok_statuses: tuple[int, ...]) -> None:
        timeout = self.config.timeout.total_seconds()
        last_problem = ""
        for attempt, delay in enumerate((0.0, *_RETRY_DELAYS)):
            time.sleep(delay)
            try:
                response = httpx.post(url, json=payload, timeout=timeout)
            except httpx.HTTPError as exc:
                last_problem = f"{exc.__class__.__name__}"
                continue
            if response.status_code in ok_statuses:
                return
            last_problem = f"HTTP {response.status_code}: {redact(response.text[:200])}"
            if response.status_code != 429 and response.status_code < 500:
                break  # the request itself is wrong; retrying will not help
        raise NotificationError(f"could not deliver to {target}: {last_problem}")

    def slack(self, text: str) -> None:
        url = resolve_secret(self.config.slack_webhook_url_env, field="notify.slack_webhook_url_env")
        self._post(url, {"text": redact(text)}, f"Slack webhook (${self.config.slack_webhook_url_env})", (200,))

    def pagerduty(self, action: str, dedup_key: str, *, summary: str = "", severity: str = "critical",
                  source: str = "maint", component: str = "", group: str = "", event_class: str = "",
                  details: dict | None = None, link: str | None = None) -> None:
        routing_key = resolve_secret(self.config.pagerduty_routing_key_env, field="notify.pagerduty_routing_key_env")
        event: dict = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}
        if action == "trigger":
            event["payload"] = {
                "summary": redact(summary)[:1024], "source": source, "severity": severity,
                "component": component, "group": group, "class": event_class,
                "custom_details": {k: redact(str(v)) for k, v in (details or {}).items()},
            }
            if link:
                event["links"] = [{"href": link, "text": "Prefect flow run"}]
        self._post(self.config.pagerduty_events_url, event,
                   f"PagerDuty Events API ({self.config.pagerduty_events_url})", (200, 201, 202))


def slack_text(report: Report, flow_run_url: str | None) -> str:
    problems = sorted(report.problems(), key=lambda f: -f.severity.rank)
    lines = [f"*maint {report.duty}: {report.status.value.upper()}*"]
    for f in problems[:_MAX_SLACK_FINDINGS]:
        lines.append(f"• [{f.severity.value}] {f.check} `{f.subject}`: {f.message}")
        if f.hint:
            lines.append(f"    ↳ {f.hint}")
    if len(problems) > _MAX_SLACK_FINDINGS:
        lines.append(f"… and {len(problems) - _MAX_SLACK_FINDINGS} more in the report")
    if flow_run_url:
        lines.append(f"<{flow_run_url}|Prefect flow run>")
    return "\n".join(lines)


def _page_details(report_duty: str, finding: Finding, flow_run_url: str | None) -> dict:
    details = {"duty": report_duty, "check": finding.check, "subject": finding.subject,
               "message": finding.message, "hint": finding.hint}
    if flow_run_url:
        details["flow_run"] = flow_run_url
    return details


def notify_report(report: Report, config: NotifyConfig, flow_run_url: str | None,
                  paging: PageScope = PageScope()) -> PagePlan | None:
    """PagerDuty trigger/resolve by plan_pages, Slack for warning or worse. Both are attempted
    whatever happens to the other (a revoked Slack webhook must not keep on-call from being
    paged); raises NotificationError afterwards if either could not be delivered. `paging`: which
    list of open pages the run keeps (the duty's, or one target's) and whether it pages at all."""
    notifier = Notifier(config)
    plan = None
    undelivered: list[NotificationError] = []
    if notifier.has_pagerduty:
        try:
            plan = _page_on_call(notifier, report, flow_run_url, config.page_on, paging)
        except NotificationError as exc:
            undelivered.append(exc)
    if notifier.has_slack and report.status is not Severity.OK:
        try:
            notifier.slack(slack_text(report, flow_run_url))
        except NotificationError as exc:
            undelivered.append(exc)
    _raise_undelivered(undelivered)
    return plan


def _page_on_call(notifier: Notifier, report: Report, flow_run_url: str | None, page_on: list[str],
                  paging: PageScope) -> PagePlan:
    # A run that got this far completed: it resolves a page left by an earlier failed run.
    run_completed = Finding(RUN_FAILED_CHECK, report.duty, Severity.OK, "run completed")
    findings = paging.paged(report.findings)
    lists = {name: load_open_pages(report.duty, name) for name in paging.lists}
    reported = {dedup_key(report.duty, f.check, f.subject) for f in findings}
    open_before = open_pages_in_view(paging, lists, reported)
    plan = plan_pages(report.duty, [*findings, run_completed], open_before, page_on,
                      frozenset(report.exhaustive_checks) if paging.pages else frozenset())
    triggered: set[str] = set()
    resolved: set[str] = set()
    try:
        for key, finding in plan.triggers:
            notifier.pagerduty("trigger", key, summary=f"maint {report.duty}: {finding.check} {finding.subject}: "
                               f"{finding.message}", severity=finding.severity.value, component=finding.subject,
                               group=report.duty, event_class=finding.check,
                               details=_page_details(report.duty, finding, flow_run_url), link=flow_run_url)
            triggered.add(key)
        for key, _finding in plan.resolves:
            notifier.pagerduty("resolve", key)
            resolved.add(key)
    finally:
        # What was delivered is remembered even when a later event was not (a 429 in a storm of
        # pages): an open page that nobody records would never be resolved.
        still_open = (set(open_before) | triggered) - resolved
        for name, keys in open_pages_after(paging, lists, reported, still_open).items():
            save_open_pages(report.duty, keys, name)
    log.info("notified: %d page(s) triggered, %d resolved", len(plan.triggers), len(plan.resolves))
    return plan


def _raise_undelivered(undelivered: list[NotificationError]) -> None:
    if len(undelivered) == 1:
        raise undelivered[0]
    if undelivered:
        raise NotificationError("; ".join(str(exc) for exc in undelivered))


def notify_run_failure(duty: str, config: NotifyConfig, message: str, flow_run_url: str | None,
                       scope: str | None = None) -> None:
    """A run that failed or crashed before it could report: a page once per duty, and Slack; both
    attempted whatever happens to the other. The page is remembered in the run's own list (the
    duty's, or its target's: `scope`), where the next completed run of the same shape resolves it."""
    notifier = Notifier(config)
    undelivered: list[NotificationError] = []
    if notifier.has_pagerduty:
        key = dedup_key(duty, RUN_FAILED_CHECK, duty)
        finding = Finding(RUN_FAILED_CHECK, duty, Severity.CRITICAL, message,
                          "open the flow run's logs; the duty did not complete")
        try:
            notifier.pagerduty("trigger", key, summary=f"maint {duty}: {message}", severity="critical",
                               component=duty, group=duty, event_class=RUN_FAILED_CHECK,
                               details=_page_details(duty, finding, flow_run_url), link=flow_run_url)
        except NotificationError as exc:
            undelivered.append(exc)
        else:
            save_open_pages(duty, sorted({*load_open_pages(duty, scope), key}), scope)
    if notifier.has_slack:
        link = f"\n<{flow_run_url}|Prefect flow run>" if flow_run_url else ""
        try:
            notifier.slack(f"*maint {duty}: RUN FAILED*\n{message}{link}")
        except NotificationError as exc:
            undelivered.append(exc)
    _raise_undelivered(undelivered)
