"""Units of work: load the users, let the engine work on them, commit what changed, then
count and log what happened. The Processor's steps, fan-outs, broadcasts and jobs all go
through here, in the daemon and in simulate alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import structlog

from engine.clock import Clock
from engine.core.changes import Changes
from engine.core.runner import Engine
from engine.core.workspace import Workspace
from engine.runtime.metrics import Metrics
from engine.runtime.states import States

log = structlog.get_logger("kaskad.processor")

T = TypeVar("T")
Tally = dict[tuple[str, str, bool], list[Any]]  # (rule, kind, stopped) -> [count, first]
OnCommit = Callable[[Workspace, Changes], Awaitable[None]]


class Stopping(Exception):
    """The daemon is stopping: the unit of work in hand is dropped, uncommitted."""


class Units:
    def __init__(
        self,
        engine: Engine,
        states: States,
        clock: Clock,
        *,
        metrics: Metrics | None,
        on_commit: OnCommit | None,
        offload: bool,
    ) -> None:
        self.engine = engine
        self.states = states
        self.clock = clock
        self.metrics = metrics
        self._on_commit = on_commit
        # The engine's work runs off the event loop in the daemon (a slow template must not
        # stall /healthz or SIGTERM); inline in simulate, where nothing else waits.
        self.executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
            if offload
            else None
        )
        self.stopping = False
        # Failures of the units of one run (a broadcast), logged when it ends.
        self._tally: Tally | None = None

    async def workspace(self, user_ids: list[str], *, starts: bool = True) -> Workspace:
        return await self.states.workspace(user_ids, self.clock.now(), starts=starts)

    async def work(self, ws: Workspace, fn: Callable[[], T]) -> T:
        """The engine's synchronous work on a loaded unit, in the engine thread or inline;
        if it fails, the unit's changes are dropped."""
        try:
            if self.executor is None:
                return fn()
            loop = asyncio.get_running_loop()
            result: T = await loop.run_in_executor(self.executor, fn)
            return result
        except BaseException:
            self.states.discard(ws)
            raise

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """Items of a unit of work, given up when the daemon stops (nothing is committed)."""
        for item in items:
            if self.stopping:
                raise Stopping
            yield item

    async def commit(self, ws: Workspace) -> None:
        try:
            changes = await self.states.commit(ws)
        except BaseException:
            self.states.discard(ws)
            raise
        self._observe(ws)
        if self._on_commit is not None:
            await self._on_commit(ws, changes)
        ws.records.clear()
        ws.errors.clear()
        ws.started.clear()
        ws.ended.clear()
        ws.zones_ignored = 0

    def _observe(self, ws: Workspace) -> None:
        """Metrics of a committed unit (starts, ends, errors), and its failures tallied for
        the log: one line per rule and kind of error, however many users it hit."""
        metrics = self.metrics
        if metrics is not None:
            for rule, count in ws.started.items():
                metrics.instances_started.labels(rule).inc(count)
            for (rule, status), count in ws.ended.items():
                metrics.instances_ended.labels(rule, status).inc(count)
            if ws.zones_ignored:
                metrics.profile_timezones_ignored.inc(ws.zones_ignored)
        tally = self._tally if self._tally is not None else {}
        for failure in ws.errors:
            key = (failure.rule, failure.kind, failure.stopped)
            if key in tally:
                tally[key][0] += 1
            else:
                tally[key] = [1, failure]
            if metrics is not None:
                family = metrics.instance_errors if failure.stopped else metrics.expression_errors
                family.labels(failure.rule, failure.kind).inc()
        if self._tally is None:
            _log_failures(tally)

    @contextlib.contextmanager
    def one_log(self) -> Iterator[None]:
        """Failures of the units inside (a broadcast run) are logged once, at the end."""
        outer, self._tally = self._tally, {}
        try:
            yield
        finally:
            tally, self._tally = self._tally, outer
            _log_failures(tally)

    def stop(self) -> None:
        """Stop taking work; a unit in the engine thread is given up (not committed)."""
        self.stopping = True
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def _log_failures(tally: Tally) -> None:
    for (rule, kind, stopped), (count, first) in tally.items():
        log.warning(
            "instance.error" if stopped else "rule.expression_failed",
            rule=rule,
            reason=kind,
            count=count,
            where=first.where,
            error=first.message[:300],
            user=first.user,
            event_id=first.event,
        )
