"""The dead man's switch: Prefect automations that page when the schedules themselves stop.

A duty pages on its own findings, but only if it runs. When the worker dies or `maint serve` is
not restarted, nothing runs and nothing pages: so the Prefect server, not the worker, watches.
For every deployed duty, created or updated idempotently by name:
- "maint DUTY: no completed run" (scheduled duties): fires when the deployment has had no
  Completed run for its window (`maint.dead_mans_switch.switch_window`), and again every window
  while none comes (PagerDuty folds the repeats into one incident: one dedup key per duty).
- "maint DUTY: run stuck or crashed": fires when a run is marked Crashed, or is still Running
  after [dead_mans_switch].stuck_after. It pages the same incident as a run that fails in its
  own process (`maint.paging.dedup_key(duty, "flow-run", duty)`).
- "maint DUTY: run completed": resolves both pages when a run Completes. (An automation's own
  "actions on resolve" would be the natural place, but the open-source Prefect server never
  resolves a trigger; only Prefect Cloud does.)
Their actions go to PagerDuty and Slack through notification blocks that maint saves from
[notify]; the routing key and webhook URL live only in the blocks' Secret fields, never in the
automations' text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from maint.config import MaintConfig
from maint.dead_mans_switch import (no_completed_run_text, stuck_or_crashed_text, switch_dedup_key,
                                    switch_window)
from maint.deployments import DeploymentPlan
from maint.paging import RUN_FAILED_CHECK, dedup_key
from maint.tasks.environment import resolve_secret

AUTOMATION_PREFIX = "maint "
SLACK_BLOCK = "maint-slack"
PAGERDUTY_TRIGGER_BLOCK = "maint-pagerduty-trigger"
PAGERDUTY_RESOLVE_BLOCK = "maint-pagerduty-resolve"
TERMINAL_EVENTS = {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                   "prefect.flow-run.Crashed"}


def automation_names(duty: str) -> dict[str, str]:
    return {kind: f"{AUTOMATION_PREFIX}{duty}: {kind}"
            for kind in ("no completed run", "run stuck or crashed", "run completed")}


# --- notification blocks ------------------------------------------------------------------------

def save_notification_blocks(config: MaintConfig) -> dict[str, UUID]:
    """The blocks the automations' actions use, saved (overwritten) from [notify] and the secrets
    in the environment; the subject of a PagerDuty notification is its dedup key."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    notify = config.notify
    blocks: dict[str, UUID] = {}
    slack_url = resolve_secret(notify.slack_webhook_url_env, field="notify.slack_webhook_url_env")
    if slack_url:
        block = CustomWebhookNotificationBlock(
            name="maint Slack", url="{{slack_webhook_url}}", json_data={"text": "{{body}}"},
            secrets={"slack_webhook_url": slack_url})
        blocks[SLACK_BLOCK] = block.save(SLACK_BLOCK, overwrite=True)
    routing_key = resolve_secret(notify.pagerduty_routing_key_env, field="notify.pagerduty_routing_key_env")
    if routing_key:
        trigger = {"routing_key": "{{routing_key}}", "event_action": "trigger", "dedup_key": "{{subject}}",
                   "payload": {"summary": "{{body}}", "source": "maint (Prefect automation)",
                               "severity": "critical", "class": "prefect-automation"}}
        resolve = {"routing_key": "{{routing_key}}", "event_action": "resolve", "dedup_key": "{{subject}}"}
        for name, body in ((PAGERDUTY_TRIGGER_BLOCK, trigger), (PAGERDUTY_RESOLVE_BLOCK, resolve)):
            block = CustomWebhookNotificationBlock(name=name, url=notify.pagerduty_events_url, json_data=body,
                                                   secrets={"routing_key": routing_key})
            blocks[name] = block.save(name, overwrite=True)
    return blocks


def _page(blocks: dict[str, UUID], key: str, text: str) -> list:
    from prefect.events.actions import SendNotification

    actions = []
    if PAGERDUTY_TRIGGER_BLOCK in blocks:
        actions.append(SendNotification(block_document_id=blocks[PAGERDUTY_TRIGGER_BLOCK], subject=key, body=text))
    if SLACK_BLOCK in blocks:
        actions.append(SendNotification(block_document_id=blocks[SLACK_BLOCK], subject=key, body=f"*PAGE* {text}"))
    return actions


# --- the automations ----------------------------------------------------------------------------

def _deployment_runs(deployment_id: UUID) -> dict[str, str]:
    return {"prefect.resource.role": "deployment", "prefect.resource.id": f"prefect.deployment.{deployment_id}"}


def planned_automations(plan: DeploymentPlan, deployment_id: UUID, config: MaintConfig,
                        blocks: dict[str, UUID], now: datetime) -> list:
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, CompoundTrigger, EventTrigger, Posture

    settings = config.dead_mans_switch
    names = automation_names(plan.duty.name)
    related = _deployment_runs(deployment_id)
    run_failed_key = dedup_key(plan.duty.name, RUN_FAILED_CHECK, plan.duty.name)
    automations = []
    if plan.cron:
        window = switch_window(plan.duty.name, plan.cron, plan.timezone, settings, now)
        text = no_completed_run_text(plan.duty.name, window, plan.cron, plan.timezone)
        automations.append(AutomationCore(
            name=names["no completed run"],
            description=f"Dead man's switch: pages when {plan.duty.name} has no Completed run for {window}.",
            trigger=EventTrigger(posture=Posture.Proactive, expect={"prefect.flow-run.Completed"},
                                 match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=related,
                                 threshold=1, within=window),
            actions=_page(blocks, switch_dedup_key(plan.duty.name), text)))
    stuck_text = stuck_or_crashed_text(plan.duty.name, settings.stuck_after) + " Run: {{ flow_run.name }}."
    automations.append(AutomationCore(
        name=names["run stuck or crashed"],
        description=f"Pages when a {plan.duty.name} run crashes or is still Running after {settings.stuck_after}.",
        trigger=CompoundTrigger(require="any", triggers=[
            EventTrigger(posture=Posture.Reactive, expect={"prefect.flow-run.Crashed"},
                         match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=related, threshold=1,
                         within=timedelta(0)),
            EventTrigger(posture=Posture.Proactive, after={"prefect.flow-run.Running"}, expect=TERMINAL_EVENTS,
                         for_each={"prefect.resource.id"}, match={"prefect.resource.id": "prefect.flow-run.*"},
                         match_related=related, threshold=1, within=settings.stuck_after),
        ]),
        actions=_page(blocks, run_failed_key, stuck_text)))
    resolve = blocks.get(PAGERDUTY_RESOLVE_BLOCK)
    automations.append(AutomationCore(
        name=names["run completed"],
        description=f"Resolves the pages above when a {plan.duty.name} run completes (PagerDuty only: "
                    "Slack hears of problems, not of every run).",
        trigger=EventTrigger(posture=Posture.Reactive, expect={"prefect.flow-run.Completed"},
                             match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=related,
                             threshold=1, within=timedelta(0)),
        actions=[SendNotification(block_document_id=resolve, subject=key, body=f"maint {plan.duty.name}: a run Completed.")
                 for key in (switch_dedup_key(plan.duty.name), run_failed_key)] if resolve else []))
    return [a for a in automations if a.actions]


def _comparable(automation) -> Any:
    """An automation as data, without the ids the server gives its triggers."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return sorted((strip(v) for v in value), key=json.dumps)
        return value
    # Not `enabled`: an automation paused for maintenance stays paused through a redeploy (an update
    # does not send it either), until someone resumes it.
    fields = {"name", "description", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"}
    return strip(json.loads(automation.model_dump_json(include=fields)))


def apply_automations(client, plans_with_ids: list[tuple[DeploymentPlan, UUID]], config: MaintConfig,
                      now: datetime) -> list[tuple[str, str]]:
    """Create, update or delete maint's automations to match; returns (name, what happened)."""
    done: list[tuple[str, str]] = []
    existing = {a.name: a for a in client.read_automations() if a.name.startswith(AUTOMATION_PREFIX)}
    wanted: dict[str, Any] = {}
    if config.dead_mans_switch.enabled:
        blocks = save_notification_blocks(config)
        for plan, deployment_id in plans_with_ids:
            for automation in planned_automations(plan, deployment_id, config, blocks, now):
                wanted[automation.name] = automation
    for name, automation in wanted.items():
        have = existing.get(name)
        if have is None:
            client.create_automation(automation)
            done.append((name, "created"))
        else:
            changed = _comparable(have) != _comparable(automation)
            if changed:
                client.update_automation(have.id, automation)
            done.append((name, ("updated" if changed else "unchanged") + ("" if have.enabled else " (paused)")))
    deployed = {plan.duty.name for plan, _ in plans_with_ids}
    for name, have in existing.items():
        duty = name[len(AUTOMATION_PREFIX):].split(":", 1)[0]
        if name not in wanted and (duty in deployed or not config.dead_mans_switch.enabled):
            client.delete_automation(have.id)
            done.append((name, "deleted"))
    return done
