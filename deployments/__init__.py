"""One Prefect deployment per configured duty, scheduled from [schedules] in [timezone].

Each deployment carries the absolute config path as its default parameter, so a scheduled run
reads the same file `maint serve` was started with; the UI shows a typed form for the rest.
"""

from __future__ import annotations

from pathlib import Path

from maint.config import MaintConfig
from maint.duties import DUTIES, missing_section_problem
from maint.flows import load_flow


def schedule_slug(duty: str) -> str:
    """Stable, so re-serving updates the schedule instead of adding a second one."""
    return f"maint-{duty}"


def build_deployments(config: MaintConfig, config_file: Path) -> list:
    from prefect.schedules import Cron

    deployments = []
    for duty in DUTIES.values():
        if missing_section_problem(duty, config):
            continue  # not configured here: nothing to schedule
        cron = config.schedules.get(duty.name)
        schedules = [Cron(cron, timezone=config.timezone, slug=schedule_slug(duty.name))] if cron else []
        deployments.append(load_flow(duty).to_deployment(
            name=duty.name,
            description=duty.summary,
            schedules=schedules,
            parameters={"config_path": str(config_file.resolve())},
            tags=["maint", *duty.tags],
        ))
    return deployments
