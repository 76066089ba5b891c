"""Scheduled jobs: broadcasts, the nightly RFM, retention. Each is a row in the store that
the engine loop fires on its own clock (the real one in the daemon, the virtual one in
simulate and tests); APScheduler's CronTrigger only computes the fire times.

A fire time is taken with one compare-and-set (Store.start_job), so it runs once however
many replicas share the store; a run's progress is written with its work, so a run cut
short by a crash is resumed, not repeated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.lang.schedule import cron_trigger, next_fire
from engine.store.base import JobRow

# A fire found later than this (the daemon was down) is skipped, as APScheduler's
# misfire_grace_time did: a Tuesday promo is not sent on Thursday.
MISFIRE_GRACE_S = 3600.0


@dataclass(frozen=True)
class Job:
    name: str
    spec: str  # the schedule as text: a changed one is planned afresh
    next_fire: Callable[[float], float | None]  # the first fire strictly after a time
    run: Callable[[JobRow], Awaitable[None]]
    # Runs that write through the engine loop (Processor.call) must not run inside it: the
    # loop starts them as tasks (in foreground mode, where call() runs inline, they run
    # in place).
    background: bool = False


def cron_job(
    name: str,
    expr: str,
    timezone: str,
    run: Callable[[JobRow], Awaitable[None]],
    *,
    background: bool = False,
) -> Job:
    trigger = cron_trigger(expr, timezone)
    return Job(
        name=name,
        spec=f"cron {expr} {timezone}",
        next_fire=lambda after: next_fire(trigger, after),
        run=run,
        background=background,
    )
