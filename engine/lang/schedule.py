"""Cron schedules for broadcast triggers (APScheduler 3's CronTrigger computes fire times)."""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

from engine.lang.localtime import zone


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A CronTrigger from a 5-field crontab string; ValueError names the problem."""
    if len(expr.split()) != 5:
        raise ValueError(
            f"'{expr}' is not a 5-field cron string (minute hour day month weekday), "
            "e.g. '0 11 * * TUE'"
        )
    try:
        return CronTrigger.from_crontab(expr, timezone=zone(timezone))
    except ValueError as exc:
        raise ValueError(f"invalid cron string '{expr}': {exc}") from None


def next_fire(trigger: CronTrigger, after: float) -> float | None:
    """The first fire time strictly after `after` (unix seconds)."""
    start = datetime.fromtimestamp(after, UTC)
    fire = trigger.get_next_fire_time(None, start)
    if fire is not None and fire.timestamp() <= after:
        fire = trigger.get_next_fire_time(fire, datetime.fromtimestamp(after + 1, UTC))
    return None if fire is None else float(fire.timestamp())
