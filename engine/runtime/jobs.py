"""Scheduled jobs: broadcasts, the nightly RFM, retention. Each is a row in the store that
the engine loop fires on its own clock (the real one in the daemon, the virtual one in
simulate and tests); APScheduler's CronTrigger only computes the fire times.

A fire time is taken with one compare-and-set (Store.start_job), so it runs once however
many replicas share the store; a run's progress is written with its work, so a run cut
short by a crash is resumed, not repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from engine.clock import iso
from engine.core.changes import JobProgress
from engine.core.workspace import Workspace
from engine.lang.schedule import cron_trigger, next_fire
from engine.runtime.units import Units
from engine.store.base import JobRow, Store

log = structlog.get_logger("kaskad.jobs")

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


def once_job(name: str, at: float, run: Callable[[JobRow], Awaitable[None]]) -> Job:
    """A job that fires once, at `at`; never again, after a restart or on another replica
    (its row keeps no next fire time)."""
    return Job(
        name=name,
        spec=f"at {iso(at)}",
        next_fire=lambda after: at if after < at else None,
        run=run,
    )


class JobRunner:
    """Plans the jobs in the store and fires those due on the engine loop's clock."""

    def __init__(self, units: Units, store: Store) -> None:
        self.units = units
        self.store = store
        self.jobs: dict[str, Job] = {}
        self.planned = True
        self.due: float | None = None  # the earliest job, as last read from the store
        self._background: set[asyncio.Task[Any]] = set()

    def set(self, jobs: Iterable[Job]) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.planned = False

    async def plan(self) -> None:
        """Write the jobs' schedules to the store (a changed schedule is planned afresh)."""
        now = self.units.clock.now()
        # A fire at this very instant counts (simulate starts at its first event).
        await self.store.plan_jobs(
            {name: (job.spec, job.next_fire(now - 1)) for name, job in self.jobs.items()}
        )
        self.planned = True
        await self.refresh()

    async def refresh(self) -> None:
        """Read the earliest job again (another replica may have fired one)."""
        self.due = await self.store.next_job_due()

    async def step(self, *, looping: bool) -> int:
        """Fire the jobs due now (once across replicas); resume runs cut short."""
        if not self.planned:
            await self.plan()
        now = self.units.clock.now()
        if self.due is None or self.due > now:
            return 0
        await self.units.states.settle()  # runs in progress are read from the store
        done = 0
        for row in await self.store.due_jobs(now):
            job = self.jobs.get(row.name)
            if job is None:
                continue
            run = await self._take(job, row, now)
            if run is None:
                continue
            assert run.run_at is not None
            log.info("job.started", job=run.name, fire=iso(run.run_at), cursor=run.cursor)
            if job.background and looping:
                task = asyncio.create_task(self._in_background(job, run), name=f"job-{job.name}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                with self.units.one_log():
                    await job.run(run)
                await self._finish(job.name, run.run_at)
            done += 1
        await self.refresh()
        return done

    async def _take(self, job: Job, row: JobRow, now: float) -> JobRow | None:
        """The run to do for this row, if this replica got it."""
        if row.run_at is not None:
            return row if await self.store.resume_job(row.name, row.run_at) else None
        assert row.due_at is not None
        # Coalesce: after downtime one run, for the latest fire time, not one each.
        next_due = job.next_fire(max(now, row.due_at))
        if not await self.store.start_job(row.name, row.due_at, next_due):
            return None  # another replica took this fire time
        if now - row.due_at > MISFIRE_GRACE_S:
            log.warning("job.missed", job=row.name, fire=iso(row.due_at))
            await self._finish(row.name, row.due_at)
            return None
        return JobRow(row.name, row.spec, next_due, row.due_at, "")

    async def _in_background(self, job: Job, run: JobRow) -> None:
        assert run.run_at is not None
        try:
            await job.run(run)
        except Exception:
            log.exception("job.failed", job=job.name)
            return
        await self._finish(job.name, run.run_at)

    async def _finish(self, name: str, run_at: float) -> None:
        ws = Workspace(now=self.units.clock.now())
        ws.changes.job = JobProgress(name, run_at, "", done=True)
        await self.units.commit(ws)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
