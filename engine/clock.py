"""The one clock seam: the daemon runs on RealClock, simulate and tests on VirtualClock."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds (UTC)."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at `when` or later; may be cancelled."""
        ...


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        delay_s = when - time.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


class VirtualClock:
    """A clock that only moves when told to: jump to the next due timer or event."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, when: float) -> None:
        # Never backwards: events out of order are handled at the current instant.
        if when > self._now:
            self._now = when

    async def sleep_until(self, when: float) -> None:
        self.advance_to(when)


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _iso_datetime(ts: float) -> str:
    """iso() through datetime: the reference, and the path for times outside the cache."""
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
