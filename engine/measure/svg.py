"""Charts as inline SVG for the dashboard: our own few lines, no script, no third party.

Every function returns `Markup`, so Jinja's autoescape leaves the SVG alone; every text that
goes into it (labels, titles) is escaped here. Numbers are checked: NaN, infinities and
negative counts draw as zero, never as broken markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

BAR = "#3b6ea5"
BAR_SOFT = "#9bb7d4"
GOOD = "#2e7d32"
BAD = "#c62828"
INK = "#222"
MUTED = "#777"
GRID = "#ccc"


def _num(value: object) -> float:
    """A finite float, else 0.0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _fmt(value: float) -> str:
    """Coordinates with at most one decimal."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _count(value: float) -> str:
    return f"{value:,.0f}".replace(",", "\u202f")  # narrow no-break space: 12 345


def _percent(part: float, whole: float) -> str:
    if whole <= 0:
        return ""
    share = 100.0 * part / whole
    return f"{share:.0f}%" if share >= 10 or share == 0 else f"{share:.1f}%"


def funnel(
    stages: Sequence[tuple[str, float]],
    *,
    title: str,
    share_of: int = 0,
    width: int = 420,
    bar_h: int = 18,
) -> Markup:
    """Horizontal bars, one per stage, sized to the largest; each bar says its count and,
    after the stage `share_of`, its share of that stage (e.g. delivered as % of sends)."""
    label_w, value_w, gap = 78, 96, 4
    plot_w = max(width - label_w - value_w, 40)
    values = [max(_num(v), 0.0) for _, v in stages]
    top = max(values, default=0.0)
    base = values[share_of] if 0 <= share_of < len(values) else 0.0
    height = len(stages) * (bar_h + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart funnel" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, ((label, _), value) in enumerate(zip(stages, values, strict=True)):
        y = gap + i * (bar_h + gap)
        w = plot_w * value / top if top > 0 else 0.0
        if 0 < w < 1:
            w = 1.0  # a non-zero count stays visible
        text_y = _fmt(y + bar_h * 0.72)
        share = _percent(value, base) if i > share_of else ""
        parts.append(
            f'<g class="stage"><text x="{label_w - 6}" y="{text_y}" text-anchor="end" '
            f'font-size="12" fill="{INK}">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{_fmt(w)}" height="{bar_h}" '
            f'fill="{BAR_SOFT if i == 0 else BAR}" rx="2">'
            f"<title>{escape(label)}: {_count(value)}</title></rect>"
            f'<text x="{_fmt(label_w + w + 4)}" y="{text_y}" font-size="12" fill="{INK}">'
            f"{_count(value)}"
            f'<tspan fill="{MUTED}">{" · " + share if share else ""}</tspan></text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def lift_plot(
    rows: Sequence[tuple[str, float | None, Sequence[float] | None]],
    *,
    title: str,
    width: int = 420,
    row_h: int = 26,
) -> Markup:
    """Each variant's lift over the baseline in percentage points, a dot with its 95%
    confidence interval as a whisker, around a zero line. Undefined lifts draw no dot."""
    label_w, pad = 60, 12
    plot_w = max(width - label_w - 2 * pad, 40)
    spans: list[float] = [0.01]  # at least +-1 point, so a tiny lift does not fill the plot
    clean: list[tuple[str, float | None, tuple[float, float] | None]] = []
    for label, lift, ci in rows:
        point = None if lift is None else _num(lift)
        interval = None
        if ci is not None and len(ci) == 2:
            low, high = sorted((_num(ci[0]), _num(ci[1])))
            interval = (max(low, -1.0), min(high, 1.0))
            spans.extend(abs(v) for v in interval)
        if point is not None:
            point = max(min(point, 1.0), -1.0)
            spans.append(abs(point))
        clean.append((label, point, interval))
    span = max(spans)
    height = len(clean) * row_h + 22
    zero = label_w + pad + plot_w / 2

    def x(value: float) -> str:
        return _fmt(zero + value / span * plot_w / 2)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart lift" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{_fmt(zero)}" y1="0" x2="{_fmt(zero)}" y2="{height - 18}" '
        f'stroke="{GRID}" stroke-dasharray="3 3"/>',
    ]
    for value, anchor in ((-span, "start"), (0.0, "middle"), (span, "end")):
        parts.append(
            f'<text x="{x(value)}" y="{height - 4}" text-anchor="{anchor}" font-size="11" '
            f'fill="{MUTED}">{100 * value:+.1f} pt</text>'
        )
    for i, (label, point, interval) in enumerate(clean):
        mid = i * row_h + row_h / 2
        parts.append(
            f'<text x="{label_w - 6}" y="{_fmt(mid + 4)}" text-anchor="end" font-size="12" '
            f'fill="{INK}">{escape(label)}</text>'
        )
        colour = MUTED
        if interval is not None:
            colour = GOOD if interval[0] > 0 else BAD if interval[1] < 0 else MUTED
            parts.append(
                f'<line x1="{x(interval[0])}" y1="{_fmt(mid)}" x2="{x(interval[1])}" '
                f'y2="{_fmt(mid)}" stroke="{colour}" stroke-width="2"/>'
            )
        if point is not None:
            parts.append(
                f'<circle cx="{x(point)}" cy="{_fmt(mid)}" r="4" fill="{colour}">'
                f"<title>{escape(label)}: {100 * point:+.2f} points</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
