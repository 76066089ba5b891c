"""Durations such as `90s`, `15m`, `1d12h`, `-7d` (units s m h d w)."""

from __future__ import annotations

import re

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"-?(\d+[smhdw])+")


def parse_duration(text: object) -> float:
    """Seconds in a duration string; a bare number is seconds. Raises ValueError, or
    OverflowError for a duration longer than a float holds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 1h or 1d12h, got a boolean")
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        kind = "nothing" if text is None else type(text).__name__
        raise ValueError(f"expected a duration such as 1h or 1d12h, got {kind}")
    compact = text.strip().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"invalid duration '{text}': expected a number with a unit (s m h d w), "
            "e.g. 15m, 1h, 1d12h"
        )
    total = sum(int(n) * _UNIT_S[u] for n, u in _PART.findall(compact))
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
