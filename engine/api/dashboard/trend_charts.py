"""The trend charts of the overview and a rule page (engine.measure.trends and trend_svg):
sends, conversions and revenue per currency over the range, and a rule's A/B lift."""

from __future__ import annotations

from typing import Any

import structlog
from markupsafe import Markup

from engine.api.state import AppState
from engine.lang.program import SendOp
from engine.measure.trend_svg import line_chart
from engine.measure.trends import HOUR, Series, Trends, load_trends

log = structlog.get_logger("kaskad.dashboard")


def _money(value: float) -> str:
    return f"{value:,.2f}".replace(",", "\u202f")


def _points(value: float) -> str:
    return f"{100 * value:+.1f} pt"


def trend_panels(t: Trends, s: Series, who: str, lift: list[Any] | None = None) -> list[Markup]:
    """Sends, conversions, revenue (a chart per currency) and the A/B lift, per bucket."""
    per = "hour" if t.bucket == HOUR else "day"
    if not t.buckets:
        return []
    panels = [
        line_chart(
            t.buckets,
            [("sends", t.values(s, "sends"))],
            title=f"Sends per {per}, {who}",
            size=t.bucket,
        ),
        line_chart(
            t.buckets,
            [("conversions", t.values(s, "conversions"))],
            title=f"Conversions (attributed orders) per {per}, {who}",
            size=t.bucket,
        ),
    ]
    for currency in sorted(s.revenue) or [""]:
        label = currency or "no currency given"
        panels.append(
            line_chart(
                t.buckets,
                [(f"revenue {label}", t.values(s, f"revenue:{currency}"))],
                title=f"Attributed revenue ({label}) per {per}, {who}",
                size=t.bucket,
                fmt=_money,
            )
        )
    if lift:
        panels.append(
            line_chart(
                t.buckets,
                lift,
                title=f"A/B lift per {per}: conversions per send over the baseline, {who}",
                size=t.bucket,
                fmt=_points,
            )
        )
    return panels


def _baseline(state: AppState, rule_id: str) -> str | None:
    rule = state.rules.current.rules.get(rule_id)
    for op in rule.program if rule else ():
        if isinstance(op, SendOp) and op.variants:
            return op.variants[0].name
    return None


async def rule_trends(state: AppState, rule_id: str, since: float | None) -> dict[str, Any]:
    """What _rule_trends.html shows: the rule's panels, or why there are none."""
    try:
        t = await load_trends(
            state.store,
            policies=state.config.policies,
            since=since,
            until=state.clock.now(),
            rule=rule_id,
        )
    except Exception as exc:
        log.exception("dashboard.trends_failed", rule=rule_id)
        return {"panels": [], "error": f"Trends could not be read ({type(exc).__name__})."}
    series = t.rules.get(rule_id, Series())
    lift = t.lift(rule_id, _baseline(state, rule_id))
    return {
        "panels": trend_panels(t, series, rule_id, lift),
        "per": "hour" if t.bucket == HOUR else "day",
        "revenue": series.revenue_total(),
        "error": None,
    }
