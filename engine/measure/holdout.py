"""Holdouts measured (SPEC 12): a rule's treatment group against its control group, and
everyone else against the global holdout; conversion, lift, its significance and the
incremental conversions and revenue, with a verdict in plain words."""

from __future__ import annotations

from typing import Any

from engine.lang.policies_config import PoliciesConfig
from engine.lang.ruleset import RuleSet
from engine.measure.proportions import SIGNIFICANCE, compare, p_text
from engine.store.base import StatsQuery, Store

# (users, converted users, revenue) of one group
Group = tuple[int, int, float]
_NONE: Group = (0, 0, 0.0)


async def measure_holdouts(
    store: Store, q: StatsQuery, rules: RuleSet | None, policies: PoliciesConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The `holdout` object of each rule that has one (rule id -> object) and the
    `global_holdout` object (None when no global holdout is configured nor measured)."""
    loaded = rules.rules if rules is not None else {}
    with_holdout = [rid for rid, r in loaded.items() if r.holdout_pct > 0]
    counts: dict[str, dict[str, tuple[int, int, int, float]]] = {}
    for rid, name, users, goals, buyers, revenue in await store.stats_holdout(q, with_holdout):
        counts.setdefault(rid, {})[name] = (users, goals, buyers, revenue)
    min_sample = policies.ab.min_sample
    per_rule: dict[str, dict[str, Any]] = {}
    for rid in sorted(set(counts) | set(with_holdout)):
        if q.rule is not None and rid != q.rule:
            continue
        groups = counts.get(rid, {})
        rule = loaded.get(rid)
        # A rule gone had a goal if a goal ended one of its instances.
        gone = any(g[1] for g in groups.values())
        by_goal = bool(rule.goals) if rule is not None else gone

        per_rule[rid] = holdout_json(
            _group(groups.get("treatment"), by_goal),
            _group(groups.get("holdout"), by_goal),
            share=rule.holdout_pct if rule is not None else None,
            converted_by="goal" if by_goal else "order",
            min_sample=min_sample,
            subject="The rule",
        )
    pct = policies.global_holdout_pct
    if pct <= 0:
        return per_rule, None
    marketing = [rid for rid, r in loaded.items() if r.marketing]
    rows = {row[0]: row[1:] for row in await store.stats_global_holdout(q, marketing)}
    overall = holdout_json(
        rows.get("treatment", _NONE),
        rows.get("holdout", _NONE),
        share=pct,
        converted_by="order",
        min_sample=min_sample,
        subject="Marketing",
    )
    return per_rule, overall


def _group(counts: tuple[int, int, int, float] | None, by_goal: bool) -> Group:
    """(users, converted, revenue): converted by the goal, or by an order in the window."""
    if counts is None:
        return _NONE
    users, goals, buyers, revenue = counts
    return users, goals if by_goal else buyers, revenue


def holdout_json(
    treatment: Group,
    holdout: Group,
    *,
    share: float | None,
    converted_by: str,
    min_sample: int,
    subject: str,
) -> dict[str, Any]:
    """Treatment against holdout: rates, absolute (pp as a fraction) and relative lift,
    p-value, 95% CI of the difference, incremental conversions and revenue, verdict."""
    n_t, x_t, money_t = treatment
    n_h, x_h, money_h = holdout
    m = compare(x_h, n_h, x_t, n_t)
    p = m.pop("_p")
    both = n_t > 0 and n_h > 0
    incremental = (x_t / n_t - x_h / n_h) * n_t if both else None
    extra_money = (money_t / n_t - money_h / n_h) * n_t if both else None
    return {
        "share": share,
        "converted_by": converted_by,
        "min_sample": min_sample,
        "treatment": _group_json(treatment),
        "holdout": _group_json(holdout),
        "lift_abs": m["lift_abs"],
        "lift_rel": m["lift_rel"],
        "p_value": m["p_value"],
        "ci95": m["ci95"],
        "incremental_conversions": None if incremental is None else round(incremental, 1),
        "incremental_revenue": None if extra_money is None else round(extra_money, 2),
        "verdict": holdout_verdict(subject, treatment, holdout, m, p, min_sample),
    }


def _group_json(group: Group) -> dict[str, Any]:
    users, converted, revenue = group
    return {
        "users": users,
        "converted": converted,
        "rate": round(converted / users, 4) if users else 0.0,
        "revenue": round(revenue, 2),
        "revenue_per_user": round(revenue / users, 2) if users else 0.0,
    }


def holdout_verdict(
    subject: str,
    treatment: Group,
    holdout: Group,
    m: dict[str, Any],
    p: float | None,
    min_sample: int,
) -> str:
    """Plain words; nothing is concluded while either group has fewer than `min_sample`."""
    n_t, x_t, _ = treatment
    n_h, x_h, _ = holdout
    if n_h < min_sample or n_t < min_sample:
        n, where = (n_h, "in the holdout") if n_h <= n_t else (n_t, "in the treatment group")
        return f"Not enough data yet: {n} of {min_sample} users {where}."
    if p is None:
        if x_t + x_h == 0:
            return "No measurable effect: nobody converted in either group."
        return "No measurable effect: everyone converted in both groups."
    points = m["lift_abs"] * 100
    low, high = (v * 100 for v in m["ci95"])
    interval = f"(95% CI {low:.1f}..{high:.1f} pp)"
    if p < SIGNIFICANCE and points > 0:
        return f"{subject} adds {points:.1f} pp conversion {interval}, {p_text(p)}."
    if p < SIGNIFICANCE and points < 0:
        return f"{subject} lowers conversion by {-points:.1f} pp {interval}, {p_text(p)}."
    return f"No measurable effect: {points:+.1f} pp {interval}, {p_text(p)}."
