"""Trend charts as inline SVG: a line chart of values over time buckets, and a sparkline.

As svg.py: `Markup` out, every text escaped here, NaN/infinite values drawn as gaps. Each
chart has a <title> and a <desc> that says in words what it shows (first, last, peak and
total), and each point a <title> with its time and value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from engine.clock import iso
from engine.measure.svg import BAR, GRID, INK, MUTED

PALETTE = (BAR, "#e07b39", "#2e7d32", "#8e44ad", "#c62828", "#00838f")
Value = float | None
MAX_POINTS = 200  # a dot with its own title per bucket up to this many buckets


def _clean(value: object) -> Value:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def label_of(bucket: int, size: int) -> str:
    """A bucket's start as the chart says it: '2026-11-03' or '2026-11-03 14:00'."""
    text = iso(float(bucket))
    return text[:10] if size >= 86400 else text[:16].replace("T", " ")


def count_text(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}".replace(",", "\u202f")
    return f"{value:,.2f}".replace(",", "\u202f")


def line_chart(
    buckets: Sequence[int],
    series: Sequence[tuple[str, Sequence[Value]]],
    *,
    title: str,
    size: int,
    fmt: Callable[[float], str] = count_text,
    width: int = 460,
    height: int = 150,
) -> Markup:
    """One line per series over the buckets, scaled to the largest magnitude (a zero line
    when there are negative values); the first, middle and last bucket labelled."""
    left, right, top, bottom = 52, 8, 8, 34
    plot_w, plot_h = max(width - left - right, 40), max(height - top - bottom, 30)
    clean = [(name, [_clean(v) for v in values]) for name, values in series]
    numbers = [v for _, values in clean for v in values if v is not None]
    high, low = max(numbers, default=0.0), min(numbers, default=0.0)
    high, low = max(high, 0.0), min(low, 0.0)
    if high == low:
        high = low + 1.0
    n = len(buckets)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (high - v) / (high - low)

    desc = [_describe(name, values, buckets, size, fmt) for name, values in clean]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"<desc>{escape(' '.join(desc))}</desc>",
        f'<line x1="{left}" y1="{_fmt(y(0))}" x2="{left + plot_w}" y2="{_fmt(y(0))}" '
        f'stroke="{GRID}"/>',
    ]
    for value in (high, low) if low < 0 else (high, 0.0):
        parts.append(
            f'<text x="{left - 4}" y="{_fmt(y(value) + 4)}" text-anchor="end" font-size="11" '
            f'fill="{MUTED}">{escape(fmt(value))}</text>'
        )
    for i in sorted({0, n // 2, n - 1}) if n else ():
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        parts.append(
            f'<text x="{_fmt(x(i))}" y="{height - bottom + 14}" text-anchor="{anchor}" '
            f'font-size="11" fill="{MUTED}">{escape(label_of(buckets[i], size))}</text>'
        )
    for k, (name, values) in enumerate(clean):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        points: list[str] = []
        for i, v in enumerate(values[:n]):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{_fmt(x(i))},{_fmt(y(v))}")
            if n > MAX_POINTS:
                continue  # a long range: the line, and the <desc> in words
            points.append(
                f'<circle cx="{_fmt(x(i))}" cy="{_fmt(y(v))}" r="{2 if n > 60 else 3}" '
                f'fill="{colour}"><title>{escape(name)}, {escape(label_of(buckets[i], size))}: '
                f"{escape(fmt(v))}</title></circle>"
            )
        group = [f'<g class="series" data-series="{escape(name)}">']
        group += [
            f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            for run in runs
            if len(run) > 1
        ]
        group += points
        group.append("</g>")
        parts.append("".join(group))
        if len(clean) > 1 or name:
            lx = left + k * 150
            parts.append(
                f'<g class="legend"><rect x="{lx}" y="{height - 12}" width="10" height="10" '
                f'fill="{colour}"/><text x="{lx + 14}" y="{height - 3}" font-size="11" '
                f'fill="{INK}">{escape(name)}</text></g>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(
    name: str,
    values: Sequence[Value],
    buckets: Sequence[int],
    size: int,
    fmt: Callable[[float], str],
) -> str:
    known = [(b, v) for b, v in zip(buckets, values, strict=False) if v is not None]
    if not known:
        return f"{name}: no data."
    peak_b, peak = max(known, key=lambda bv: bv[1])
    total = sum(v for _, v in known)
    return (
        f"{name}: {fmt(known[0][1])} on {label_of(known[0][0], size)}, "
        f"{fmt(known[-1][1])} on {label_of(known[-1][0], size)}, "
        f"peak {fmt(peak)} on {label_of(peak_b, size)}, total {fmt(total)}."
    )


def sparkline(values: Sequence[Value], *, title: str, width: int = 120, height: int = 24) -> Markup:
    """A small line of the values (no axes), its title saying the total and the peak."""
    clean = [_clean(v) or 0.0 for v in values]
    top = max(max(clean, default=0.0), 1e-9)
    n = len(clean)
    pad = 2

    def x(i: int) -> str:
        return _fmt(pad + ((width - 2 * pad) * i / (n - 1) if n > 1 else (width - 2 * pad) / 2))

    def y(v: float) -> str:
        return _fmt(height - pad - (height - 2 * pad) * max(v, 0.0) / top)

    line = " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(clean))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart sparkline" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    if n > 1:
        parts.append(f'<polyline points="{line}" fill="none" stroke="{BAR}" stroke-width="1.5"/>')
    elif n == 1:
        parts.append(f'<circle cx="{x(0)}" cy="{y(clean[0])}" r="2" fill="{BAR}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
