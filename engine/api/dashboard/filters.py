"""The dashboard templates' Jinja filters: times, counts, money, rates and p-values as the
pages show them, and "—" for a number that is missing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from engine.clock import iso


def when(value: object) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return iso(float(value)).replace("T", " ").replace("Z", " UTC")
    return str(value).replace("T", " ").replace("Z", " UTC") if value else "—"


def num(value: object) -> str:
    return f"{value:,}".replace(",", "\u202f") if isinstance(value, int) else "—"


def money(value: object) -> str:
    if isinstance(value, int | float):
        return f"{value:,.2f}".replace(",", "\u202f")
    return "—"


def rate(value: object) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "—"


def points(value: object) -> str:
    return f"{100 * value:+.1f} pt" if isinstance(value, int | float) else "—"


def pvalue(value: object) -> str:
    if not isinstance(value, int | float):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def interval(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{points(value[0])}, {points(value[1])}]"
    return "—"


def skips(value: object) -> str:
    if not isinstance(value, dict) or not value:
        return ""
    return ", ".join(f"{k}: {n}" for k, n in sorted(value.items(), key=lambda kv: -kv[1]))


# By the names the templates use.
FILTERS: dict[str, Callable[[Any], str]] = {
    "when": when,
    "num": num,
    "money": money,
    "rate": rate,
    "points": points,
    "pvalue": pvalue,
    "interval": interval,
    "skips": skips,
}
