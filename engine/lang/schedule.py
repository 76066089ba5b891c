"""Cron schedules for broadcast triggers (APScheduler 3's CronTrigger computes fire times).

Times are wall-clock times in the trigger's timezone, made instants as everywhere (see
engine/lang/localtime.py): on the night clocks go forward a time in the gap moves forward by
the gap (`30 2 * * *` runs at 03:30 CEST); on the night they go back a schedule runs at the
first of the two same wall-clock times only, unless its hour is `*` (every hour: it runs
through both, as the hours they are).
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

from engine.lang.localtime import zone

_REPEATS = 200  # fire times in one repeated hour at most (every minute: 60), and room


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


def _every_hour(trigger: CronTrigger) -> bool:
    hour = next(f for f in trigger.fields if f.name == "hour")
    return str(hour) == "*"


def _second_of_two(trigger: CronTrigger, fire: datetime) -> bool:
    """Whether `fire` is a wall-clock time the night clocks go back shows the second time."""
    local = datetime.fromtimestamp(fire.timestamp(), trigger.timezone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def next_fire(trigger: CronTrigger, after: float) -> float | None:
    """The first fire time strictly after `after` (unix seconds)."""
    start = datetime.fromtimestamp(after, UTC)
    fire = trigger.get_next_fire_time(None, start)
    if fire is not None and fire.timestamp() <= after:
        fire = trigger.get_next_fire_time(fire, datetime.fromtimestamp(after + 1, UTC))
    if not _every_hour(trigger):
        for _ in range(_REPEATS):
            if fire is None or not _second_of_two(trigger, fire):
                break
            moved = datetime.fromtimestamp(fire.timestamp() + 1, UTC)
            fire = trigger.get_next_fire_time(fire, moved)
    return None if fire is None else float(fire.timestamp())
