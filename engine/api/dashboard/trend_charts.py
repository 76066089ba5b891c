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
from engine.store.base import StatsQuery

log = structlog.get_logger("kaskad.dashboard")
HOLDOUT_BUCKETS = 31  # a query per bucket: the most recent ones only


def _money(value: float) -> str:
    return f"{value:,.2f}".replace(",", "\u202f")


def _points(value: float) -> str:
    return f"{100 * value:+.1f} pt"


def trend_panels(
    t: Trends,
    s: Series,
    who: str,
    lift: list[Any] | None = None,
    holdout: list[float | None] | None = None,
) -> list[Markup]:
    """Sends, conversions, revenue (a chart per currency), the A/B lift and the holdout
    lift, per bucket."""
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
    if holdout and any(v is not None for v in holdout):
        shown = t.buckets[-len(holdout) :]
        panels.append(
            line_chart(
                shown,
                [("treatment vs holdout", holdout)],
                title=f"Holdout lift per {per}: conversion rate of the treated over the "
                f"held out (users started that {per}), {who}",
                size=t.bucket,
                fmt=_points,
            )
        )
    return panels


async def holdout_lift(state: AppState, rule_id: str, t: Trends) -> list[float | None] | None:
    """The rule's holdout lift per bucket (the last HOLDOUT_BUCKETS): the treated users'
    conversion rate minus the held-out users', among those whose instance started in the
    bucket (as measure/holdout.py counts them); None where a group is empty."""
    rule = state.rules.current.rules.get(rule_id)
    if rule is None or rule.holdout_pct <= 0 or not t.buckets:
        return None
    attribution = state.config.policies.attribution
    out: list[float | None] = []
    for b in t.buckets[-HOLDOUT_BUCKETS:]:
        q = StatsQuery(
            since=float(b),
            until=float(b + t.bucket),
            rule=rule_id,
            touch=attribution.touch,
            window_s=attribution.window_s,
        )
        rates: dict[str, float] = {}
        for rid, group, users, goals, buyers, _revenue in await state.store.stats_holdout(
            q, [rule_id]
        ):
            if rid == rule_id and users:
                rates[group] = (goals if rule.goals else buyers) / users
        both = "treatment" in rates and "holdout" in rates
        out.append(rates["treatment"] - rates["holdout"] if both else None)
    return out


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
        holdout = await holdout_lift(state, rule_id, t)
    except Exception as exc:
        log.exception("dashboard.trends_failed", rule=rule_id)
        return {"panels": [], "error": f"Trends could not be read ({type(exc).__name__})."}
    series = t.rules.get(rule_id, Series())
    lift = t.lift(rule_id, _baseline(state, rule_id))
    return {
        "panels": trend_panels(t, series, rule_id, lift, holdout),
        "per": "hour" if t.bucket == HOUR else "day",
        "revenue": series.revenue_total(),
        "error": None,
    }
