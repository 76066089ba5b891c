"""Numbers for marketers: funnels per rule / step / channel / variant, attribution, A/B.

Everything is counted by GROUP BY queries in the store; this module shapes the rows into
the stats JSON (`kaskad stats --format json`, `GET /v1/stats`, the dashboard) and its text
table, and gives the A/B verdict (the arithmetic is in proportions.py); holdouts are
measured in holdout.py.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.clock import iso, parse_time
from engine.core.model import ACTIVE, ENDED
from engine.lang.durations import parse_duration
from engine.lang.policies_config import PoliciesConfig
from engine.lang.program import SendOp
from engine.lang.ruleset import RuleSet
from engine.measure.holdout import measure_holdouts
from engine.measure.journey import journey_json
from engine.measure.proportions import SIGNIFICANCE, compare, p_text
from engine.store.base import OrderCounts, StatsQuery, Store

# Unix seconds of 0001-01-01 and 9999-12-31T23:59:59: any range is clamped into this.
MIN_TIME = -62135596800.0
MAX_TIME = 253402300799.0
_COUNTS = ("sends", "skipped", "delivered", "opened", "clicked")


def parse_bound(text: str, now: float, name: str) -> float:
    """`since`/`until`: ISO 8601 (naive = UTC) or a duration before now (`-7d` or `7d`)."""
    value = text.strip()
    if not value:
        raise ValueError(f"{name}: empty; expected an ISO time or a duration such as -7d")
    if re.fullmatch(r"-?(\d+[smhdw])+", value):
        try:
            ago = parse_duration(value.lstrip("-"), capped=False)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        return clamp(now - ago)
    try:
        return clamp(parse_time(value))
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name}: '{text}' is neither an ISO 8601 time (2026-11-01T00:00:00Z) "
            "nor a duration before now (-7d)"
        ) from None


def clamp(ts: float) -> float:
    return min(max(ts, MIN_TIME), MAX_TIME)


# -- A/B verdict ---------------------------------------------------------------------------


def verdict(
    baseline: str, users: dict[str, int], rows: list[dict[str, Any]], min_sample: int
) -> str:
    """Plain words; no winner while any variant has fewer than `min_sample` users."""
    if not rows:
        return f"Only one variant ({baseline}): nothing to compare."
    smallest = min(users.values(), default=0)
    if smallest < min_sample:
        return f"Not enough data yet: {smallest} of {min_sample} users per variant."
    said: list[str] = []
    for row in rows:
        for metric in ("conversion", "clicks"):
            m = row[metric]
            p = m["_p"]
            if p is None or p >= SIGNIFICANCE:
                continue
            points = m["lift_abs"] * 100
            rel = f" ({m['lift_rel'] * 100:+.0f}%)" if m["lift_rel"] is not None else ""
            if points > 0:
                said.append(
                    f"{row['variant']} beats {baseline} on {metric}: "
                    f"{points:+.1f} points{rel}, {p_text(p)}."
                )
            else:
                said.append(
                    f"{row['variant']} loses to {baseline} on {metric}: "
                    f"{points:+.1f} points{rel}, {p_text(p)}."
                )
            break  # conversion decides; clicks only speak when conversion does not
    if said:
        return " ".join(said)
    ps = [r["conversion"]["_p"] for r in rows if r["conversion"]["_p"] is not None]
    if ps:
        return f"No significant difference yet (p = {min(ps):.2f})."
    return "No significant difference yet: no conversions to compare."


# -- shaping the rows -----------------------------------------------------------------------


@dataclass
class _Row:
    sends: int = 0
    skipped: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    revenue: float = 0.0
    skips: dict[str, int] = field(default_factory=dict)

    def add(self, status: str, reason: str | None, counts: Iterable[int]) -> None:
        messages, sends, delivered, opened, clicked = counts
        self.sends += sends
        self.delivered += delivered
        self.opened += opened
        self.clicked += clicked
        if status == "skipped":
            self.skipped += messages
            skip = reason or "unknown"
            self.skips[skip] = self.skips.get(skip, 0) + messages

    def json(self) -> dict[str, Any]:
        return {
            **{k: int(getattr(self, k)) for k in _COUNTS},
            "converted": int(self.converted),
            "revenue": round(self.revenue, 2),
            "skips": dict(sorted(self.skips.items())),
        }


@dataclass
class _Rule:
    funnel: _Row = field(default_factory=_Row)
    steps: dict[tuple[str, str | None, str | None], _Row] = field(default_factory=dict)
    channels: dict[str | None, _Row] = field(default_factory=dict)
    variants: dict[str, _Row] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    cohorts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    journey: dict[tuple[str, str], int] = field(default_factory=dict)

    def rows(self, step: str, channel: str | None, variant: str | None) -> list[_Row]:
        out = [
            self.funnel,
            self.steps.setdefault((step, channel, variant), _Row()),
            self.channels.setdefault(channel, _Row()),
        ]
        if variant is not None:
            out.append(self.variants.setdefault(variant, _Row()))
        return out


# Instances by status, in the names the store and the timeline use (engine.core.model):
# running (active) first, then how they ended: goal (converted), exit_on (exited), the last
# step (completed), max_lateness (expired), a new trigger (restarted), the rule or the user
# gone (stopped). A status added later is counted under its own name after these.
_ENDS = ("converted", "exited", "completed", "expired", "restarted", "stopped")
INSTANCE_KEYS: tuple[str, ...] = ("started", ACTIVE, *_ENDS, *sorted(ENDED - set(_ENDS)))
# A rule's state (also in GET /v1/rules and on the dashboard): its current file runs
# (active); its file is broken and the previous version runs (stale, daemon only); its file
# is broken and nothing runs (invalid); its file is gone but its numbers are not (deleted).
# paused: stopped by hand (POST /v1/rules/{id}/pause): it starts no instance.
RULE_STATES = ("active", "stale", "invalid", "deleted", "paused")


def _step_key(path: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.split("."))


def _defined_variants(rules: RuleSet | None, rule_id: str) -> list[str]:
    rule = rules.rules.get(rule_id) if rules else None
    names: list[str] = []
    for op in rule.program if rule else ():
        if isinstance(op, SendOp):
            names.extend(v.name for v in op.variants if v.name not in names)
    return names


async def compute_stats(
    store: Store,
    *,
    rules: RuleSet | None,
    policies: PoliciesConfig,
    rule: str | None = None,
    since: float | None = None,
    until: float | None = None,
    now: float,
    orders: bool = True,
) -> dict[str, Any]:
    """The stats JSON for [since, until): each row counted on its own time (messages when
    created, instances when started, orders when placed); A/B cohorts are the users whose
    instance started in range, with their clicks and attributed orders whenever they came;
    holdouts compare the users whose instance started in range (see measure/holdout.py).
    `orders`: count all orders of the range too (the shop's totals, whatever the rule);
    without, "orders" is null (a rule's dashboard page does not show them)."""
    attribution = policies.attribution
    q = StatsQuery(
        since=clamp(since) if since is not None else MIN_TIME,
        until=clamp(until) if until is not None else MAX_TIME,
        rule=rule,
        touch=attribution.touch,
        window_s=attribution.window_s,
    )
    by_rule: dict[str, _Rule] = {}

    def of(rule_id: str) -> _Rule:
        return by_rule.setdefault(rule_id, _Rule())

    # The reads are independent: PostgreSQL answers them side by side on the pool's
    # connections (SQLite's reader takes them in turn).
    async with asyncio.TaskGroup() as tg:
        messages = tg.create_task(store.stats_messages(q))
        attributed = tg.create_task(store.stats_attributed(q))
        instances = tg.create_task(store.stats_instances(q))
        cohorts = tg.create_task(store.stats_variants(q))
        journeys = tg.create_task(store.journey_counts(q))
        holdout = tg.create_task(measure_holdouts(store, q, rules, policies))
        controls = tg.create_task(store.rule_controls())
        order_rows = tg.create_task(store.stats_orders(q)) if orders else None
    for rid, step, channel, variant, status, reason, *numbers in messages.result():
        for row in of(rid).rows(step, channel, variant):
            row.add(status, reason, numbers)
    for rid, step, channel, variant, n_orders, revenue in attributed.result():
        for row in of(rid).rows(step, channel, variant):
            row.converted += n_orders
            row.revenue += revenue
    for rid, status, count in instances.result():
        tally = of(rid).instances
        tally[status] = tally.get(status, 0) + count
        tally["started"] = tally.get("started", 0) + count
    for rid, variant, users, clickers, converters in cohorts.result():
        of(rid).cohorts[variant] = (users, clickers, converters)
    for rid, step, edge, count in journeys.result():
        of(rid).journey[(step, edge)] = count

    ids = set(by_rule)
    if rules is not None:
        ids |= set(rules.rules) | set(rules.failed)
    if rule is not None:
        ids &= {rule}
    min_sample = policies.ab.min_sample
    holdouts, global_holdout = holdout.result()
    paused = {r for r, c in controls.result().items() if c.paused}
    return {
        "generated_at": iso(math.floor(now)),
        "since": iso(q.since) if since is not None else None,
        "until": iso(q.until) if until is not None else None,
        "attribution": {"window": attribution.window, "touch": attribution.touch},
        "orders": _orders_json(order_rows.result()) if order_rows else None,
        "rules": [
            _paused(
                {
                    **_rule_json(rid, by_rule.get(rid, _Rule()), rules, min_sample),
                    "holdout": holdouts.get(rid),
                },
                paused,
            )
            for rid in sorted(ids)
        ],
        "global_holdout": global_holdout,
    }


def _paused(row: dict[str, Any], paused: set[str]) -> dict[str, Any]:
    """A loaded rule paused by hand is in state paused."""
    if row["rule"] in paused and row["state"] in ("active", "stale"):
        row["state"] = "paused"
    return row


def _orders_json(rows: list[OrderCounts]) -> dict[str, Any]:
    by_source = {s: {"count": 0, "revenue": 0.0} for s in ("online", "offline")}
    count = attributed = 0
    revenue = attributed_revenue = 0.0
    for source, n, money, n_attr, money_attr in rows:
        slot = by_source.setdefault(source, {"count": 0, "revenue": 0.0})
        slot["count"] = int(slot["count"]) + n
        slot["revenue"] = round(float(slot["revenue"]) + money, 2)
        count += n
        revenue += money
        attributed += n_attr
        attributed_revenue += money_attr
    return {
        "count": count,
        "revenue": round(revenue, 2),
        "attributed": attributed,
        "attributed_revenue": round(attributed_revenue, 2),
        "by_source": by_source,
    }


def rule_state(rid: str, rules: RuleSet | None) -> str:
    """One of RULE_STATES for a rule id in the rule set (None: none loaded)."""
    loaded = rules.rules.get(rid) if rules else None
    if rules is not None and loaded is not None:
        broken = any(p.path == loaded.path for p in rules.problems)
        return "stale" if broken else "active"
    if rules is not None and rid in rules.failed:
        return "invalid"
    return "deleted"


async def known_rules(store: Store, rules: RuleSet | None) -> set[str]:
    """Every rule id stats can speak of: loaded or broken rules, and any with data."""
    q = StatsQuery(since=MIN_TIME, until=MAX_TIME, rule=None, touch="click", window_s=0.0)
    ids = set(await store.instance_rules())
    ids |= {row[0] for row in await store.stats_messages(q)}
    if rules is not None:
        ids |= set(rules.rules) | set(rules.failed)
    return ids


def _rule_json(rid: str, data: _Rule, rules: RuleSet | None, min_sample: int) -> dict[str, Any]:
    loaded = rules.rules.get(rid) if rules else None
    state = rule_state(rid, rules)
    extra = sorted(set(data.instances) - set(INSTANCE_KEYS))
    instances = {k: data.instances.get(k, 0) for k in (*INSTANCE_KEYS, *extra)}
    funnel = data.funnel.json()
    skips = funnel.pop("skips")
    names = _defined_variants(rules, rid)
    names += sorted((set(data.variants) | set(data.cohorts)) - set(names))
    variants = [
        {
            "variant": name,
            "users": data.cohorts.get(name, (0, 0, 0))[0],
            **data.variants.get(name, _Row()).json(),
        }
        for name in names
    ]
    steps = [
        {
            "step": step,
            "name": loaded.step_name(step) if loaded else step,
            "channel": channel,
            "variant": variant,
            **row.json(),
        }
        for (step, channel, variant), row in sorted(
            data.steps.items(),
            key=lambda kv: (_step_key(kv[0][0]), kv[0][1] or "~", kv[0][2] or ""),
        )
    ]
    channels = [
        {"channel": channel, **row.json()}
        for channel, row in sorted(data.channels.items(), key=lambda kv: kv[0] or "~")
    ]
    return {
        "rule": rid,
        "name": (loaded.description or rid) if loaded else rid,
        "state": state,
        "instances": instances,
        "funnel": funnel,
        "skips": skips,
        "steps": steps,
        "channels": channels,
        "variants": variants,
        "ab": _ab(names, data.cohorts, min_sample) if names else None,
        "journey": journey_json(data.journey, loaded),
    }


def _ab(
    names: list[str], cohorts: dict[str, tuple[int, int, int]], min_sample: int
) -> dict[str, Any]:
    baseline = names[0]
    n1, c1, x1 = cohorts.get(baseline, (0, 0, 0))
    rows: list[dict[str, Any]] = []
    for name in names[1:]:
        n2, c2, x2 = cohorts.get(name, (0, 0, 0))
        rows.append(
            {
                "variant": name,
                "users": n2,
                "conversion": compare(x1, n1, x2, n2),
                "clicks": compare(c1, n1, c2, n2),
            }
        )
    users = {name: cohorts.get(name, (0, 0, 0))[0] for name in names}
    text = verdict(baseline, users, rows, min_sample)
    for row in rows:
        row["conversion"].pop("_p")
        row["clicks"].pop("_p")
    return {"baseline": baseline, "min_sample": min_sample, "variants": rows, "verdict": text}
