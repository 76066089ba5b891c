"""Durations such as `90s`, `15m`, `1d12h`, `-7d` (units s m h d w), at most 10 years."""

from __future__ import annotations

import math
import re

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"-?(\d+[smhdw])+")

# No rule waits for longer (nor a config window): a longer one is a typo (99999999d), and
# times that far off are past what a calendar (or a datetime) holds.
MAX_DURATION_S = 3650 * 86400
MAX_DURATION = "3650d"


def _too_long(shown: object) -> ValueError:
    text = str(shown)
    text = text if len(text) <= 24 else text[:20] + "..."
    return ValueError(f"duration '{text}' is over the limit of 10 years ({MAX_DURATION})")


def parse_duration(text: object, *, capped: bool = True) -> float:
    """Seconds in a duration string; a bare number is seconds. Raises ValueError, also for
    a duration over MAX_DURATION_S either way, or NaN.

    `capped=False` (a window back in time to report on: `since=-99999w` is all time) lets
    any length through, and raises OverflowError for one longer than a float holds.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 1h or 1d12h, got a boolean")
    if isinstance(text, int | float):
        if isinstance(text, float) and math.isnan(text):
            raise ValueError("expected a duration such as 1h or 1d12h, got nan")
        if capped and abs(text) > MAX_DURATION_S:
            raise _too_long(text)
        return float(text)
    if not isinstance(text, str):
        kind = "nothing" if text is None else type(text).__name__
        raise ValueError(f"expected a duration such as 1h or 1d12h, got {kind}")
    compact = text.strip().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        shown = text if len(text) <= 40 else text[:36] + "..."
        raise ValueError(
            f"invalid duration '{shown}': expected a number with a unit (s m h d w), "
            "e.g. 15m, 1h, 1d12h"
        )
    total = sum(int(n) * _UNIT_S[u] for n, u in _PART.findall(compact))
    if capped and total > MAX_DURATION_S:  # compared as an integer: no float of it may exist
        raise _too_long(compact)
    try:
        seconds = float(total)
    except OverflowError:
        shown = compact if len(compact) <= 24 else compact[:20] + "..."
        raise OverflowError(f"duration '{shown}' is too long to count in seconds") from None
    return -seconds if compact.startswith("-") else seconds


def format_duration(seconds: float) -> str:
    """The shortest duration string for a number of seconds (inverse of parse_duration)."""
    sign = "-" if seconds < 0 else ""
    rest = int(abs(seconds))
    if rest == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        n, rest = divmod(rest, _UNIT_S[unit])
        if n:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts)
