"""Two proportions compared: the arithmetic of A/B verdicts and holdouts (a pooled
two-proportion z-test and the 95% confidence interval of the difference)."""

from __future__ import annotations

import math
from typing import Any

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal
SIGNIFICANCE = 0.05


def z_test(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; None when undefined."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (x2 / n2 - x1 / n1) / se
    return math.erfc(abs(z) / math.sqrt(2))


def ci95(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """95% confidence interval of p2 - p1 (unpooled standard error); None without users."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p2 - p1 - Z_95 * se, p2 - p1 + Z_95 * se


def rate(x: int, n: int) -> float:
    return x / n if n > 0 else 0.0


def p_round(p: float | None) -> float | None:
    # Four significant digits: a tiny p-value stays visible instead of rounding to 0.
    return None if p is None else float(f"{p:.4g}")


def compare(x1: int, n1: int, x2: int, n2: int) -> dict[str, Any]:
    """One metric of a group against the baseline (x = users with it, n = users)."""
    value, base = rate(x2, n2), rate(x1, n1)
    interval = ci95(x1, n1, x2, n2)
    p = z_test(x1, n1, x2, n2)
    return {
        "rate": round(value, 4),
        "baseline_rate": round(base, 4),
        "lift_abs": round(value - base, 4),
        "lift_rel": round((value - base) / base, 4) if base > 0 else None,
        "p_value": p_round(p),
        "ci95": [round(interval[0], 4), round(interval[1], 4)] if interval else None,
        "_p": p,  # unrounded, for the verdict; removed before the JSON leaves
    }


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
