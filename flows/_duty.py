"""What every duty's flow does around its own steps: load the config, publish the report, notify.

A duty's flow returns its report as a dict. When the report is critical the flow returns a
Failed state whose message is one line naming the duty and its worst findings, and whose data is
a `CriticalReport` carrying the report: Prefect shows the run red with that reason, the CLI still
gets the report (and exit code 2). Prefect then re-raises that exception at the end of the engine
and logs it with a traceback; `quiet_critical_reports` turns those records into the one line.
A run that raises (an internal error, a bad config under a deployment, an undeliverable
notification) fails or crashes on its own; `page_run_failure` pages for it.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from maint.config import MaintConfig
from maint.duties import DUTIES, missing_section_problem
from maint.errors import ConfigError, CriticalReport, MaintError, TransientError
from maint.paging import PageScope
from maint.redaction import redact
from maint.report import Finding, Report, Severity
from maint.tasks.environment import config_path, load_config

# Where Prefect logs the exception a Failed run ends with: the run's logger, the engine's
# (`python -m prefect.engine` under a worker) and the runner's (`maint serve`); and where it logs
# a task run's (`prefect.task_runs`).
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.engine", "prefect.flow_engine", "prefect.runner",
                  "prefect.task_runs")


class _CriticalReportIsNotACrash(logging.Filter):
    """A critical report is the product working: log its one-line reason, not a traceback. Nor
    does any other MaintError get one: it is an expected failure (a lock_timeout, a refused
    connection) whose message says what happened, and the report has it as a finding; a
    traceback on stderr would only look like maint itself had broken."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CriticalReport):
            record.msg, record.args = "%s: %s", (type(exc).__name__, exc)
        if isinstance(exc, MaintError):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_critical_reports() -> None:
    """Install the filter on Prefect's engine loggers (idempotent). Called on import, so it is in
    place in every process that loads a duty's flow: a worker's flow run process included."""
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _CriticalReportIsNotACrash) for f in logger.filters):
            logger.addFilter(_CriticalReportIsNotACrash())


quiet_critical_reports()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def load_duty_config(path: str | None, duty: str) -> MaintConfig:
    config = load_config(config_path(path))
    problem = missing_section_problem(DUTIES[duty], config)
    if problem:
        raise ConfigError([problem])
    return config


def start_report(duty: str) -> Report:
    return Report(duty=duty, started_at=utcnow())


def finding_from_error(check: str, subject: str, exc: MaintError, hint: str) -> Finding:
    return Finding(check=check, subject=subject, severity=Severity.CRITICAL, message=redact(str(exc)), hint=hint)


def is_transient(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only what may succeed in a moment."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:
        return False
    return False


def flow_run_url(flow_run_id=None) -> str | None:
    """The UI's page of a flow run (this run's by default), when PREFECT_UI_URL is set; the form
    Prefect's own `flow_run.ui_url` has (the UI redirects it to /runs/flow-run/ID)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    flow_run_id = flow_run_id or flow_run.id
    ui = PREFECT_UI_URL.value()
    return f"{ui}/flow-runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("maint")


def publish_report(report: Report, url: str | None) -> None:
    """The markdown report and the findings table, side by side: two API round trips that need
    not wait for each other (the thread shares this run's context, so its client and flow run)."""
    key = report.duty.replace("_", "-")
    table = report.to_table() or [{"check": "-", "subject": "-", "severity": "ok", "message": "no findings",
                                   "hint": ""}]
    with ThreadPoolExecutor(max_workers=1) as pool:
        findings = pool.submit(contextvars.copy_context().run, create_table_artifact, table=table,
                               key=f"{key}-findings", description=report.summary_line())
        create_markdown_artifact(markdown=report.to_markdown(url), key=f"{key}-report",
                                 description=report.summary_line())
        findings.result()


def notify_on_call(report: Report, config: MaintConfig, url: str | None, paging: PageScope = PageScope()) -> None:
    from maint.tasks.notify import notify_report

    notify_report(report, config.notify, url, paging)


def finish_duty(report: Report, config: MaintConfig, *, paging: PageScope = PageScope()) -> Any:
    """Close the report, publish it, tell on-call; the flow's return value. `paging`: which list
    of open pages the run keeps, and whether its findings page (maint.paging.PageScope)."""
    from prefect.runtime import flow_run

    report.finished_at = utcnow()
    url = flow_run_url()
    if flow_run.id:
        report.details["flow_run_id"] = str(flow_run.id)
    log = _logger()
    # Problems one line each; what passed as a count (the report artifact lists every finding,
    # and a thousand log rows per run would only bury the problems).
    for finding in report.problems():
        level = logging.ERROR if finding.severity is Severity.CRITICAL else logging.WARNING
        log.log(level, "%s %s: %s", finding.check, finding.subject, finding.message)
    # Plain calls, not tasks: neither is worth retrying on its own (a notification that cannot be
    # delivered must fail the run), and a task run costs 10-30 ms of API round trips, which is
    # most of a cert-check's own time.
    publish_report(report, url)
    notify_on_call(report, config, url, paging)  # raises if undeliverable: the run must not look fine
    log.info(report.summary_line())
    data = report.to_dict()
    if report.status is Severity.CRITICAL:
        reason = report.failure_reason()
        return Failed(message=reason, data=CriticalReport(reason, data))
    return data


def report_of(result: Any) -> dict | None:
    """The report a duty's run returned, whether it ended Completed (the dict) or Failed with a
    critical report; None when the run could not produce one (it raised)."""
    if isinstance(result, CriticalReport):
        return result.report
    if isinstance(result, dict) and "findings" in result:
        return result
    return None


def page_run_failure(flow, flow_run, state, *, open_pages_scope: str | None = None) -> None:
    """on_failure/on_crashed hook: a run that could not produce its report pages on its own.

    A run that failed because its report was critical has already paged per finding. A run limited
    to one target keeps the page in that target's list (`open_pages_scope`, see PageScope)."""
    if Report.is_critical_reason(flow.name, state.message):
        return
    from maint.tasks.notify import notify_run_failure

    log = logging.getLogger("maint")
    duty = flow.name
    try:
        config = load_config(config_path(flow_run.parameters.get("config_path")))
    except ConfigError as exc:
        log.error("cannot page for the failed %s run: the configuration is invalid: %s", duty, exc)
        return
    url = flow_run_url(flow_run.id)
    reason = redact(state.message or state.type.value)
    notify_run_failure(duty, config.notify, f"flow run {flow_run.name} {state.type.value.lower()}: {reason}", url,
                       open_pages_scope)


def run_now(flow, **parameters):
    """Run a duty's flow in this process, as `maint run` does; returns its final state.

    Heartbeats let a Prefect server notice a worker that died; here the caller is watching, and
    Prefect's heartbeat thread would add up to a second to the end of every run. The settings are
    copied rather than rebuilt (`temporary_settings` validates every setting again: ~0.1 s)."""
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    settings = context.settings
    if settings.flows.heartbeat_frequency is None:
        return flow(**parameters, return_state=True)
    quiet = settings.model_copy(update={"flows": settings.flows.model_copy(update={"heartbeat_frequency": None})})
    with SettingsContext(profile=context.profile, settings=quiet):
        return flow(**parameters, return_state=True)
