"""User-local time: zones, times of day, quiet hours.

A wall-clock time is turned into an instant the one way everywhere (quiet hours, `wait:
{at: ...}`, schedules): on the night clocks go forward, a time that does not exist moves
forward by the gap (02:30 in Europe/Berlin on 2026-03-29 is 03:30 CEST); on the night they
go back, a time that happens twice is the first of the two (02:30 on 2026-10-25 is 02:30
CEST, not CET). Times past what a calendar holds (year 9999) are no one's local time: they
have no quiet hours, and a time of day after them is themselves.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from engine.clock import MAX_TIME, MIN_TIME

_MAX_ZONE_CHARS = 64  # the longest IANA name has 32
# Names the zone database holds that are no place: the machine's own zone, a template file
# of the database, a zone with no offset of its own.
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
_MARGIN = 3 * 86400  # a day either side in any zone, and a day to go on to


@functools.lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA timezone names there are (from the tz database installed)."""
    return frozenset(zoneinfo.available_timezones()) - _NOT_PLACES


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """An IANA timezone such as Europe/Berlin; ValueError for anything else.

    Only names of the tz database are looked up: ZoneInfo reads a file named by its key, so
    'localtime' (the machine's zone, different on every machine), paths, and names that are
    no zone never reach it.
    """
    shown = name if len(name) <= _MAX_ZONE_CHARS else name[:_MAX_ZONE_CHARS] + "..."
    if name in _NOT_PLACES:
        raise ValueError(
            f"timezone '{name}' is not a place (the machine's own zone differs from machine "
            "to machine): name an IANA zone such as Europe/Berlin"
        )
    if name not in zone_names():
        raise ValueError(
            f"unknown timezone '{shown}' (expected an IANA name such as Europe/Moscow)"
        )
    return ZoneInfo(name)


def parse_time_of_day(text: str) -> time:
    """`"10:00"` or `"21:30:00"` -> time. Raises ValueError."""
    try:
        parts = [int(p) for p in str(text).split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return time(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)
    except (ValueError, TypeError):
        raise ValueError(f"invalid time of day '{text}': expected HH:MM, e.g. 10:00") from None


def _in_calendar(ts: float) -> bool:
    return MIN_TIME + _MARGIN <= ts <= MAX_TIME - _MARGIN


def local_instant(day: date, at: time, tz: ZoneInfo) -> float:
    """The instant the wall clock in tz shows `at` on `day`: a time in the gap of a DST
    change moves forward by the gap, a time that happens twice is the first of the two."""
    # fold=0 is both (PEP 495): the offset before the change, for a time in the gap too
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).timestamp()


def next_local_time(ts: float, at: time, tz: ZoneInfo) -> float:
    """The first moment >= ts when the wall clock in tz shows `at` (see local_instant)."""
    if not _in_calendar(ts):
        return ts
    today = datetime.fromtimestamp(ts, tz).date()
    for days in range(3):  # today's has passed: tomorrow's (a gap may push it one further)
        candidate = local_instant(today + timedelta(days=days), at, tz)
        if candidate >= ts:
            return candidate
    return ts  # (not reached: tomorrow's is over 20 hours on)


def quiet_until(ts: float, start: time, end: time, tz: ZoneInfo) -> float | None:
    """When quiet hours [start, end) cover ts in tz, the end of them; else None.

    The hours are the instants between start's and end's (see local_instant), from
    yesterday's start (hours over midnight) or today's.
    """
    if start == end or not _in_calendar(ts):
        return None
    today = datetime.fromtimestamp(ts, tz).date()
    for day in (today - timedelta(days=1), today):
        begins = local_instant(day, start, tz)
        ends = local_instant(day if start < end else day + timedelta(days=1), end, tz)
        if begins <= ts < ends:
            return ends
    return None
