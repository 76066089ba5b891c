"""Trends: sends, conversions and revenue over time, per rule and overall, from the store's
hourly rows (engine/store/trends_sql.py), never from the message log.

Buckets are hours for a range under 3 days, else UTC days. Conversions and revenue are
the orders attributed per policies.attribution, as stats counts them; revenue is kept per
currency ('' when the order gave none). The A/B lift per bucket is each variant's
conversions per send minus the baseline's (the first variant the rule defines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine.lang.policies_config import PoliciesConfig
from engine.store.base import Store

HOUR = 3600
DAY = 86400
HOURLY_UNDER_S = 3 * DAY
COUNTS = ("messages", "sends", "skipped", "failed", "delivered", "opened", "clicked")


def bucket_for(since: float | None, until: float) -> int:
    """Hours for a range under 3 days, else days."""
    return HOUR if since is not None and until - since < HOURLY_UNDER_S else DAY


@dataclass
class Series:
    """Counts of one rule (or all) per bucket, and its totals."""

    counts: dict[int, list[int]] = field(default_factory=dict)  # bucket -> COUNTS
    conversions: dict[int, int] = field(default_factory=dict)
    revenue: dict[str, dict[int, float]] = field(default_factory=dict)  # currency -> bucket
    channels: set[str] = field(default_factory=set)

    def add(self, bucket: int, numbers: list[int]) -> None:
        mine = self.counts.get(bucket)
        if mine is None:
            self.counts[bucket] = list(numbers)
        else:
            for i, n in enumerate(numbers):
                mine[i] += n

    def add_orders(self, bucket: int, currency: str, n: int, revenue: float) -> None:
        self.conversions[bucket] = self.conversions.get(bucket, 0) + n
        money = self.revenue.setdefault(currency, {})
        money[bucket] = money.get(bucket, 0.0) + revenue

    def by_bucket(self, name: str) -> dict[int, int]:
        if name == "conversions":
            return self.conversions
        i = COUNTS.index(name)
        return {b: c[i] for b, c in self.counts.items()}

    def total(self, name: str) -> int:
        if name == "conversions":
            return sum(self.conversions.values())
        i = COUNTS.index(name)
        return sum(c[i] for c in self.counts.values())

    def revenue_total(self) -> dict[str, float]:
        return {cur: round(sum(v.values()), 2) for cur, v in sorted(self.revenue.items())}

    @property
    def quiet(self) -> bool:
        return not self.total("messages") and not self.total("conversions")


@dataclass
class Trends:
    bucket: int
    buckets: list[int]
    rules: dict[str, Series]
    overall: Series
    orders: Series  # every order placed, attributed or not: conversions = orders
    variants: dict[str, dict[str, Series]]  # rule -> variant -> series

    def values(self, series: Series, name: str) -> list[float]:
        if name.startswith("revenue:"):
            data: dict[int, Any] = series.revenue.get(name.partition(":")[2], {})
        else:
            data = series.by_bucket(name)
        return [data.get(b, 0) for b in self.buckets]

    def lift(self, rule: str, baseline: str | None = None) -> list[tuple[str, list[float | None]]]:
        """Per variant but the baseline: conversions per send minus the baseline's, per
        bucket (None where either had no sends)."""
        by_variant = self.variants.get(rule, {})
        names = sorted(by_variant)
        if baseline is None or baseline not in by_variant:
            baseline = names[0] if names else None
        if baseline is None:
            return []

        def rates(s: Series) -> list[float | None]:
            sends = s.by_bucket("sends")
            return [
                s.conversions.get(b, 0) / sends[b] if sends.get(b) else None for b in self.buckets
            ]

        base = rates(by_variant[baseline])
        out = []
        for name in names:
            if name == baseline:
                continue
            mine = rates(by_variant[name])
            out.append(
                (
                    f"{name} vs {baseline}",
                    [
                        None if a is None or b is None else a - b
                        for a, b in zip(mine, base, strict=True)
                    ],
                )
            )
        return out


MAX_BUCKETS = 400  # a longer range starts at its first bucket with data


def _buckets(since: float | None, until: float, bucket: int, seen: set[int]) -> list[int]:
    end = math.floor(until / bucket) * bucket  # the bucket holding until
    first_data = min(seen) if seen else None
    if since is None:
        if first_data is None:
            return []
        start = first_data
    else:
        start = math.floor(since / bucket) * bucket
        if (end - start) // bucket >= MAX_BUCKETS and first_data is not None:
            start = max(start, first_data)
    start = min(start, end)
    count = int((end - start) // bucket) + 1
    if count > 5000:  # decades of data: the last 5000 buckets
        start = end - 4999 * bucket
        count = 5000
    return [start + i * bucket for i in range(count)]


async def load_trends(
    store: Store,
    *,
    policies: PoliciesConfig,
    since: float | None,
    until: float,
    rule: str | None = None,
    bucket: int | None = None,
    detail: bool = True,
) -> Trends:
    """The trends of [since, until] (since None: all time; until is usually now, and what
    happened this second counts), the range widened to whole hours (the rows' grain).
    Without detail no channels nor variants (fewer rows)."""
    size = bucket or bucket_for(since, until)
    start = math.floor(since / HOUR) * HOUR if since is not None else -(2**62)
    end = math.floor(until / HOUR) * HOUR + HOUR
    attribution = policies.attribution
    rules: dict[str, Series] = {}
    overall, orders = Series(), Series()
    variants: dict[str, dict[str, Series]] = {}
    seen: set[int] = set()
    for b, rid, channel, variant, *numbers in await store.trend_messages(
        start, end, rule, size, detail
    ):
        seen.add(b)
        s = rules.get(rid)
        if s is None:
            s = rules[rid] = Series()
        s.add(b, numbers)
        if channel:
            s.channels.add(channel)
        if variant:
            variants.setdefault(rid, {}).setdefault(variant, Series()).add(b, numbers)
    for s in rules.values():
        overall.channels |= s.channels
        for b, numbers in s.counts.items():
            overall.add(b, numbers)
    rows = await store.trend_orders(
        start, end, rule, attribution.touch, attribution.window_s, size, detail
    )
    for b, touch, rid, _channel, variant, currency, n, revenue in rows:
        seen.add(b)
        if touch == "all":
            orders.add_orders(b, currency, int(n), float(revenue))
            continue
        rules.setdefault(rid, Series()).add_orders(b, currency, int(n), float(revenue))
        overall.add_orders(b, currency, int(n), float(revenue))
        if variant:
            by_variant = variants.setdefault(rid, {}).setdefault(variant, Series())
            by_variant.add_orders(b, currency, int(n), float(revenue))
    return Trends(
        bucket=size,
        buckets=_buckets(since, until, size, seen),
        rules=rules,
        overall=overall,
        orders=orders,
        variants=variants,
    )
