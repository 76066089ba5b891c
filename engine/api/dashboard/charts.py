"""The charts the dashboard templates draw (inline SVG from engine.measure.svg)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.measure import svg

FUNNEL = ("started", "sends", "delivered", "opened", "clicked", "converted")


def funnel_chart(row: dict[str, Any], width: int = 420) -> Markup:
    """A stats rule row's funnel: started -> sends -> ... -> converted."""
    funnel, instances = row.get("funnel") or {}, row.get("instances") or {}
    stages = [("started", instances.get("started", 0))]
    stages += [(stage, funnel.get(stage, 0)) for stage in FUNNEL[1:]]
    title = f"Funnel of {row.get('rule', '?')}: chains started, then messages (% of sends)"
    return svg.funnel(stages, title=title, share_of=1, width=width)


def lift_chart(ab: dict[str, Any], metric: str = "conversion") -> Markup:
    """A stats `ab` block's lifts over the baseline, with their confidence intervals."""
    rows = [
        (str(v.get("variant")), v[metric].get("lift_abs"), v[metric].get("ci95"))
        for v in ab.get("variants", [])
        if isinstance(v.get(metric), dict)
    ]
    return svg.lift_plot(rows, title=f"{metric} lift over {ab.get('baseline')}")
