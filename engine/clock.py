"""The one clock seam: the daemon runs on RealClock, simulate and tests on VirtualClock."""

from __future__ import annotations

import asyncio
import heapq
import time
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds (UTC)."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at `when` or later; may be cancelled."""
        ...

    async def wait(self, wake: asyncio.Event, until: float) -> bool:
        """Return True as soon as `wake` is set, False once `until` has come."""
        ...


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        delay_s = when - time.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    async def wait(self, wake: asyncio.Event, until: float) -> bool:
        if wake.is_set():
            return True
        delay_s = until - time.time()
        if delay_s <= 0:
            return False
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay_s)
        except TimeoutError:
            return wake.is_set()
        return True


class VirtualClock:
    """A clock that only moves when told to (`advance_to`): sleepers wake when it passes
    their time, so tests and simulate decide when time goes by and never sleep for it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    def start_at(self, when: float) -> None:
        """Set the time, backwards too: for a clock nothing has run on yet (simulate starts
        at its first event, which may be before 1970)."""
        if self._sleepers:
            raise RuntimeError("start_at: tasks are sleeping on this clock")
        self._now = when

    def advance_to(self, when: float) -> None:
        # Never backwards: events out of order are handled at the current instant.
        if when > self._now:
            self._now = when
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def next_sleeper(self) -> float | None:
        """When the earliest task sleeping on this clock wants to wake, if any."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def _sleeper(self, when: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (when, self._seq, fut))
        return fut

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        await self._sleeper(when)

    async def wait(self, wake: asyncio.Event, until: float) -> bool:
        if wake.is_set():
            return True
        if until <= self._now:
            await asyncio.sleep(0)
            return wake.is_set()
        timer = self._sleeper(until)
        waiter: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
        pending: set[asyncio.Future[Any]] = {timer, waiter}
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        return wake.is_set()


# The times a datetime holds (0001-01-01 .. 9999-12-31T23:59:59Z, as unix seconds).
MIN_TIME = -62135596800.0
MAX_TIME = 253402300799.0
_END = MAX_TIME + 1.0  # (its last second has fractions too)


def _iso_datetime(ts: float) -> str:
    """iso() through datetime: the reference, and the path for times outside the cache.

    A time past what a datetime holds (a timer set after year 9999: it never fires) shows as
    the last (or first) second there is, never an OverflowError.
    """
    if not MIN_TIME <= ts < _END:
        ts = MIN_TIME if ts < MIN_TIME else MAX_TIME  # (NaN too: it compares as nothing)
    dt = datetime.fromtimestamp(ts, UTC)
    base = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    if dt.microsecond:
        return f"{base}.{dt.microsecond // 1000:03d}Z"
    return f"{base}Z"


_MINUTE_PREFIX: dict[int, str] = {}  # unix minute -> "YYYY-MM-DDTHH:MM:"
_CACHE_MAX = 4096
_SECONDS = tuple(f"{n:02d}" for n in range(60))
_MILLIS = ("Z", *(f".{n:03d}Z" for n in range(1, 1000)))


def iso(ts: float) -> str:
    """ISO 8601 UTC with a trailing Z, millisecond precision only when needed.

    Runs for every event and record, so all but the seconds come from a per-minute cache;
    the microseconds round as datetime.fromtimestamp rounds them (half to even), so the
    text is exactly what the datetime path gives.
    """
    if not 0.0 <= ts < 253402300800.0:  # before 1970 or after 9999: the general path
        return _iso_datetime(ts)
    whole = int(ts)
    micro = round((ts - whole) * 1e6)
    if micro >= 1_000_000:
        whole += 1
        micro -= 1_000_000
    minute, second = divmod(whole, 60)
    prefix = _MINUTE_PREFIX.get(minute)
    if prefix is None:
        if len(_MINUTE_PREFIX) >= _CACHE_MAX:
            _MINUTE_PREFIX.clear()
        dt = datetime.fromtimestamp(minute * 60, UTC)
        prefix = _MINUTE_PREFIX[minute] = (
            f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        )
    if micro:
        millis = micro // 1000
        return prefix + _SECONDS[second] + (_MILLIS[millis] if millis else ".000Z")
    return prefix + _SECONDS[second] + "Z"


def parse_time(text: str) -> float:
    """Unix seconds from ISO 8601; a naive time is taken as UTC. Raises ValueError."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
