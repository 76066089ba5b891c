"""User-local time: zones, times of day, quiet hours."""

from __future__ import annotations

import functools
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MAX_ZONE_CHARS = 64  # the longest IANA name has 32


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """An IANA timezone; ValueError for anything else (never an OSError from the lookup)."""
    shown = name if len(name) <= _MAX_ZONE_CHARS else name[:_MAX_ZONE_CHARS] + "..."
    problem = ValueError(
        f"unknown timezone '{shown}' (expected an IANA name such as Europe/Moscow)"
    )
    if not name or len(name) > _MAX_ZONE_CHARS:
        raise problem
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name the zone database cannot hold as a file path
        raise problem from None


def parse_time_of_day(text: str) -> time:
    """`"10:00"` or `"21:30:00"` -> time. Raises ValueError."""
    try:
        parts = [int(p) for p in str(text).split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return time(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)
    except (ValueError, TypeError):
        raise ValueError(f"invalid time of day '{text}': expected HH:MM, e.g. 10:00") from None


def next_local_time(ts: float, at: time, tz: ZoneInfo) -> float:
    """The first moment >= ts when the wall clock in tz shows `at`."""
    local = datetime.fromtimestamp(ts, tz)
    candidate = local.replace(hour=at.hour, minute=at.minute, second=at.second, microsecond=0)
    if candidate.timestamp() < ts:
        candidate = (local + timedelta(days=1)).replace(
            hour=at.hour, minute=at.minute, second=at.second, microsecond=0
        )
    # Re-attach the zone so a DST change between the two days is honoured.
    candidate = datetime.combine(candidate.date(), at, tzinfo=tz)
    return candidate.timestamp()


def quiet_until(ts: float, start: time, end: time, tz: ZoneInfo) -> float | None:
    """When quiet hours [start, end) cover ts in tz, the end of them; else None."""
    now = datetime.fromtimestamp(ts, tz).time()
    inside = (start <= now < end) if start < end else (now >= start or now < end)
    if start == end or not inside:
        return None
    return next_local_time(ts, end, tz)
