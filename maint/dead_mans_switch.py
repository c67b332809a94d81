"""The dead man's switch: how long a scheduled duty may go without a Completed run before
on-call hears of it. Pure: the schedule and `now` come in, windows and texts go out; the Prefect
automations that watch these windows are built in `maint.deployments.automations`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from maint.config import DeadMansSwitchConfig

# Enough firings to see a schedule's longest gap: a year of a daily cron, every weekday of a
# weekly one, two years of a monthly one; a minute cron stops at this many and is regular anyway.
_FIRINGS_LOOKED_AT = 800


def schedule_period(cron: str, timezone: str, now: datetime) -> timedelta:
    """The longest gap between two consecutive firings from `now` on, in the schedule's zone (so
    a monthly cron's period is 31 days, and a daylight-saving night is counted as it falls)."""
    firings = CronSim(cron, now.astimezone(ZoneInfo(timezone)))
    # In UTC: two times of one zone subtract as wall clocks, which a daylight-saving night fools.
    previous = next(firings).astimezone(UTC)
    longest = timedelta(0)
    for _ in range(_FIRINGS_LOOKED_AT):
        following = next(firings).astimezone(UTC)
        longest = max(longest, following - previous)
        previous = following
    return longest


def switch_window(duty: str, cron: str, timezone: str, settings: DeadMansSwitchConfig, now: datetime) -> timedelta:
    """No Completed run for this long pages: the schedule's period, plus `grace_share` of it, plus
    `grace`; or the whole window given for the duty in `windows`."""
    if duty in settings.windows:
        return settings.windows[duty]
    period = schedule_period(cron, timezone, now)
    return period + period * settings.grace_share + settings.grace


def describe_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{seconds}s" if seconds else ""]
    return " ".join(p for p in parts if p) or "0s"


def switch_dedup_key(duty: str) -> str:
    """One PagerDuty incident per duty for 'it stopped running', whatever the number of misses."""
    return f"maint-{duty}-dead-mans-switch"


def no_completed_run_text(duty: str, window: timedelta, cron: str, timezone: str) -> str:
    return (f"maint {duty}: no Completed run in the last {describe_window(window)} (schedule {cron!r}, "
            f"{timezone}). The worker or `maint serve` may be down, or every run failed: check the work "
            "pool's workers and the deployment's runs in the Prefect UI.")


def stuck_or_crashed_text(duty: str, stuck_after: timedelta) -> str:
    return (f"maint {duty}: a run crashed, or is still Running after {describe_window(stuck_after)}. Its "
            "process or worker may have died: open the run in the Prefect UI, cancel it if it is stuck, "
            "and run the duty again.")
