"""Neutral rule/event workload and the durable_rules side of the matcher benchmark.

The same 50 rules and the same event stream are pushed through durable_rules (benchmark peer)
and through kaskad's own matcher.  This module owns:

* the neutral rule spec (:class:`RuleSpec` / :class:`Cond`) and deterministic generators
  (:func:`make_rules`, :func:`make_events`);
* the ground truth (:func:`expected_matches`) -- plain Python, the number of (event, rule)
  pairs where the event type equals the rule's and every condition holds;
* the kaskad rendering of a rule (:func:`to_kaskad_expression`);
* the durable_rules run (:func:`durable_rules_match`).
"""

from __future__ import annotations

import json
import math
import operator
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias

Op: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<="]
Scalar: TypeAlias = str | int | float
Event: TypeAlias = dict[str, Any]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class Cond:
    """One comparison ``event.data.<path> <op> <value>``."""

    path: tuple[str, ...]
    op: Op
    value: Scalar


@dataclass(slots=True)
class RuleSpec:
    """A trigger: fires for events of ``event_type`` when all ``conditions`` hold (AND)."""

    name: str
    event_type: str
    conditions: list[Cond] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Event stream
# --------------------------------------------------------------------------------------------

EVENT_TYPES: tuple[str, ...] = (
    "product.viewed",
    "cart.updated",
    "search.performed",
    "points.accrued",
    "order.created",
)
# Share of each type in the stream (browsing dominates, orders are rare).
_TYPE_WEIGHTS: tuple[float, ...] = (0.40, 0.20, 0.20, 0.12, 0.08)

N_USERS = 2_000

CATEGORIES: tuple[str, ...] = (
    "phones",
    "laptops",
    "tv",
    "audio",
    "appliances",
    "home",
    "toys",
    "books",
    "beauty",
    "sports",
    "garden",
    "gift-cards",
)
_CATEGORY_WEIGHTS: tuple[float, ...] = (18, 10, 6, 12, 8, 14, 7, 9, 7, 5, 3, 1)
# Typical price level per category (median of a log-normal), in currency units.
_CATEGORY_PRICE: dict[str, float] = {
    "phones": 450.0,
    "laptops": 900.0,
    "tv": 600.0,
    "audio": 90.0,
    "appliances": 300.0,
    "home": 35.0,
    "toys": 25.0,
    "books": 15.0,
    "beauty": 20.0,
    "sports": 60.0,
    "garden": 45.0,
    "gift-cards": 50.0,
}
CURRENCIES: tuple[str, ...] = ("EUR", "USD", "GBP", "PLN")
_CURRENCY_WEIGHTS: tuple[float, ...] = (60, 25, 10, 5)
SOURCES: tuple[str, ...] = ("online", "offline")
_SOURCE_WEIGHTS: tuple[float, ...] = (80, 20)
QUERIES: tuple[str, ...] = (
    "iphone",
    "samsung galaxy",
    "headphones",
    "laptop",
    "airpods",
    "coffee machine",
    "lego",
    "vacuum",
    "tv 55",
    "kindle",
    "running shoes",
    "gift card",
    "o'neill jacket",
    "usb-c cable",
    "blender",
    "garden hose",
)
_QUERY_WEIGHTS: tuple[float, ...] = tuple(1.0 / (rank + 1) for rank in range(len(QUERIES)))


def _money(value: float) -> float:
    return round(max(value, 0.5), 2)


def _gen_data(rng: random.Random, event_type: str) -> dict[str, Any]:
    """Draw the ``data`` object of one event; distributions are shared with :func:`make_rules`."""
    if event_type == "product.viewed":
        category = rng.choices(CATEGORIES, _CATEGORY_WEIGHTS)[0]
        price = _money(rng.lognormvariate(math.log(_CATEGORY_PRICE[category]), 0.6))
        return {
            "product_id": f"p{rng.randrange(50_000):06d}",
            "price": price,
            "category": category,
        }
    if event_type == "cart.updated":
        items = min(1 + int(rng.expovariate(1 / 2.2)), 40)
        total = _money(sum(rng.lognormvariate(math.log(40.0), 0.9) for _ in range(items)))
        currency = rng.choices(CURRENCIES, _CURRENCY_WEIGHTS)[0]
        return {"total": total, "items_count": items, "currency": currency}
    if event_type == "order.created":
        source = rng.choices(SOURCES, _SOURCE_WEIGHTS)[0]
        median = 120.0 if source == "online" else 260.0
        return {"total": _money(rng.lognormvariate(math.log(median), 0.8)), "source": source}
    if event_type == "search.performed":
        query = rng.choices(QUERIES, _QUERY_WEIGHTS)[0]
        # ~8% of searches come back empty, the rest have a long-tailed result count.
        results = 0 if rng.random() < 0.08 else 1 + int(rng.expovariate(1 / 60))
        return {"query": query, "results": results}
    if event_type == "points.accrued":
        amount = 1 + int(rng.expovariate(1 / 80))
        balance = amount + int(rng.expovariate(1 / 2_500))
        return {"amount": amount, "balance": balance}
    raise ValueError(f"unknown event type {event_type!r}")


def make_events(n: int, seed: int = 2) -> list[Event]:
    """``n`` deterministic kaskad envelopes ``{"id","type","user_id","time","data"}``.

    Types follow ``_TYPE_WEIGHTS``; user ids are drawn uniformly from ``N_USERS`` (2,000)
    users, so any stream of a few thousand events touches ~all of them.  Ids are unique
    (``evt-<seed>-<index>``), times increase monotonically from 2024-05-01T00:00:00Z.
    """
    rng = random.Random(seed)
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    millis = 0
    events: list[Event] = []
    for i in range(n):
        event_type = rng.choices(EVENT_TYPES, _TYPE_WEIGHTS)[0]
        millis += 1 + int(rng.expovariate(1 / 250))
        stamp = t0 + timedelta(milliseconds=millis)
        events.append(
            {
                "id": f"evt-{seed}-{i:08d}",
                "type": event_type,
                "user_id": f"u{rng.randrange(N_USERS):05d}",
                "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "data": _gen_data(rng, event_type),
            }
        )
    return events


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

# A rule template: ordered (field, op) slots.  Equality slots on categorical fields are filled
# with a concrete value first; numeric slots then get thresholds cut from a sample of the same
# distribution so the rule as a whole hits a target selectivity.
_Slot: TypeAlias = tuple[str, Op]
_TEMPLATES: dict[str, tuple[tuple[str, tuple[_Slot, ...]], ...]] = {
    "cart.updated": (
        ("cart_high_value", (("total", ">="),)),
        ("cart_many_items", (("items_count", ">="),)),
        ("cart_big_basket", (("total", ">"), ("items_count", ">="))),
        ("cart_currency_value", (("currency", "=="), ("total", ">"))),
        ("cart_other_currency_bulk", (("currency", "!="), ("items_count", ">="), ("total", ">"))),
        ("cart_small_upsell", (("total", "<"),)),
    ),
    "product.viewed": (
        ("view_category", (("category", "=="),)),
        ("view_category_premium", (("category", "=="), ("price", ">"))),
        ("view_expensive", (("price", ">="),)),
        ("view_cheap_other_category", (("category", "!="), ("price", "<"))),
        ("view_category_band", (("category", "=="), ("price", ">="), ("price", "<="))),
    ),
    "order.created": (
        ("order_large", (("total", ">"),)),
        ("order_source_large", (("source", "=="), ("total", ">="))),
        ("order_source_small", (("source", "=="), ("total", "<"))),
        ("order_by_source", (("source", "=="),)),
    ),
    "search.performed": (
        ("search_few_results", (("results", "<"),)),
        ("search_popular", (("results", ">"),)),
        ("search_query", (("query", "=="),)),
        ("search_query_thin", (("query", "=="), ("results", "<="))),
        ("search_query_empty", (("query", "=="), ("results", "=="))),
        ("search_zero_results", (("results", "=="),)),
    ),
    "points.accrued": (
        ("points_big_accrual", (("amount", ">="),)),
        ("points_rich_balance", (("balance", ">="),)),
        ("points_big_low_balance", (("amount", ">"), ("balance", "<"))),
    ),
}
_CATEGORICAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("cart.updated", "currency"): CURRENCIES,
    ("product.viewed", "category"): CATEGORIES,
    ("order.created", "source"): SOURCES,
    ("search.performed", "query"): QUERIES,
}
_INT_FIELDS = frozenset({"items_count", "results", "amount", "balance"})
# Target share of the rule's event type that the rule should match: from ~50% down to ~1%.
_SELECTIVITIES: tuple[float, ...] = (0.5, 0.3, 0.15, 0.08, 0.04, 0.02, 0.01)
_SAMPLE_SIZE = 4_000


def _nice(value: float, *, integer: bool) -> int | float:
    """Round a threshold to two significant digits, as a marketer would write it."""
    if value <= 0:
        return 0 if integer else 0.0
    digits = 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    if integer:
        return max(round(rounded), 0)
    return float(rounded) if digits > 0 else float(int(rounded))


def _holds(data: dict[str, Any], cond: Cond) -> bool:
    value: Any = data
    for key in cond.path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return _OPS[cond.op](value, cond.value)


def _threshold(values: list[Any], op: Op, keep: float, *, integer: bool) -> int | float:
    """A "nice" threshold such that ``value <op> threshold`` keeps about ``keep`` of ``values``.

    Never returns a threshold that keeps nothing of the sample (e.g. ``results < 0``).
    """
    ordered = sorted(values)
    keep = min(max(keep, 0.005), 0.98)
    last = len(ordered) - 1
    if op in (">", ">="):
        raw = ordered[min(int(len(ordered) * (1 - keep)), last)]
    else:
        raw = ordered[min(int(len(ordered) * keep), last)]
    nice = _nice(raw, integer=integer)
    if not any(_OPS[op](v, nice) for v in ordered):
        step = 1 if integer else 0.01
        nice = raw - step if op == ">" else raw + step if op == "<" else raw
        if not integer:
            nice = round(nice, 2)
    return nice


def _draw_conditions(
    rng: random.Random, sample: list[dict[str, Any]], event_type: str, slots: Sequence[_Slot]
) -> list[Cond]:
    target = rng.choice(_SELECTIVITIES)
    pool = sample
    conditions: list[Cond] = []
    # 1) categorical slots: pick the value, narrowing the pool.
    for field_name, op in slots:
        choices = _CATEGORICAL.get((event_type, field_name))
        if choices is not None:
            cond = Cond((field_name,), op, rng.choice(choices))
            conditions.append(cond)
            pool = [d for d in pool if _holds(d, cond)] or pool
    # 2) numeric slots: split what is left of the target selectivity evenly between them.
    numeric = [(f, op) for f, op in slots if (event_type, f) not in _CATEGORICAL]
    if not numeric:
        return conditions
    keep_each = (target * len(sample) / len(pool)) ** (1 / len(numeric))
    first_bound: dict[str, Scalar] = {}
    for field_name, op in numeric:
        integer = field_name in _INT_FIELDS
        values = [d[field_name] for d in pool]
        threshold: Scalar
        if op == "==":
            threshold = 0  # "results == 0": a search that found nothing
        elif field_name in first_bound:
            # Second bound on the same field (a price band): upper edge above the lower one.
            lower = first_bound[field_name]
            assert isinstance(lower, int | float)
            threshold = max(_threshold(values, op, keep_each, integer=integer), lower)
        else:
            threshold = _threshold(values, op, keep_each, integer=integer)
        first_bound.setdefault(field_name, threshold)
        cond = Cond((field_name,), op, threshold)
        conditions.append(cond)
        pool = [d for d in pool if _holds(d, cond)] or pool
    return conditions


def make_rules(n: int = 50, seed: int = 1) -> list[RuleSpec]:
    """``n`` deterministic e-commerce triggers spread round-robin over the five event types.

    Each rule has 1-3 ANDed conditions (numeric thresholds, categorical ``==``/``!=``) and a
    target selectivity drawn from ``_SELECTIVITIES`` (~50% .. ~1% of its event type); thresholds
    are cut from a private sample of the event distributions and rounded to two significant
    digits, so realised selectivities on :func:`make_events` streams are near the target, not
    on it.  Rules of one type routinely overlap (several fire on one event): that is intended,
    every matching rule must fire.  Condition sets are unique when the templates allow it.
    """
    rng = random.Random(seed)
    sample_rng = random.Random(seed * 7919 + 17)
    samples = {t: [_gen_data(sample_rng, t) for _ in range(_SAMPLE_SIZE)] for t in EVENT_TYPES}
    template_cursor = dict.fromkeys(EVENT_TYPES, 0)
    seen: set[tuple[str, tuple[Cond, ...]]] = set()
    rules: list[RuleSpec] = []
    for i in range(n):
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        templates = _TEMPLATES[event_type]
        base_name, slots = templates[template_cursor[event_type] % len(templates)]
        template_cursor[event_type] += 1
        for _attempt in range(20):
            conditions = _draw_conditions(rng, samples[event_type], event_type, slots)
            key = (event_type, tuple(conditions))
            if key not in seen:
                break
        seen.add(key)
        rules.append(RuleSpec(f"r{i:02d}_{base_name}", event_type, conditions))
    return rules


# --------------------------------------------------------------------------------------------
# Ground truth and kaskad rendering
# --------------------------------------------------------------------------------------------


def rule_matches(rule: RuleSpec, event: Event) -> bool:
    """Plain-Python semantics shared by every side of the benchmark."""
    if event.get("type") != rule.event_type:
        return False
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    return all(_holds(data, cond) for cond in rule.conditions)


def expected_matches(rules: Sequence[RuleSpec], events: Iterable[Event]) -> int:
    """Number of (event, rule) pairs where the types are equal and all conditions hold."""
    by_type: dict[str, list[RuleSpec]] = {}
    for rule in rules:
        by_type.setdefault(rule.event_type, []).append(rule)
    return sum(
        1
        for event in events
        for rule in by_type.get(event.get("type", ""), ())
        if rule_matches(rule, event)
    )


def _jinja_literal(value: Scalar) -> str:
    if isinstance(value, bool):  # bool is an int subclass; Jinja spells it lower-case
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"non-finite threshold {value!r} has no Jinja literal")
        return repr(value)
    # Jinja decodes string literals with "unicode-escape": escape backslash, the quote and
    # anything non-printable; printable non-ASCII round-trips through backslashreplace.
    out = []
    for ch in value:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode-escape").decode("ascii"))
    return "'" + "".join(out) + "'"


def to_kaskad_expression(rule: RuleSpec) -> str:
    """The Jinja2 expression kaskad evaluates against ``event`` (the type is matched apart).

    >>> to_kaskad_expression(RuleSpec("x", "product.viewed", [
    ...     Cond(("price",), ">", 100), Cond(("category",), "==", "phones")]))
    "event.data.price > 100 and event.data.category == 'phones'"
    """
    if not rule.conditions:
        return "true"
    parts = []
    for cond in rule.conditions:
        if not all(key.isidentifier() for key in cond.path):
            raise ValueError(f"path {cond.path!r} is not attribute-addressable")
        lhs = ".".join(("event", "data", *cond.path))
        parts.append(f"{lhs} {cond.op} {_jinja_literal(cond.value)}")
    return " and ".join(parts)


# --------------------------------------------------------------------------------------------
# durable_rules side
# --------------------------------------------------------------------------------------------
#
# Findings on durable_rules 2.0.28 (the installed peer), each checked with a small probe
# script, that shape this adapter:
#
# * ONE RULE PER EVENT.  An event is *consumed* by the first rule of a ruleset that matches it;
#   other rules of that ruleset matching the same event never fire.  Putting all 50 rules in
#   one ruleset therefore counts "events matching >= 1 rule", not (event, rule) pairs.
#   Fix: partition the rules into rulesets whose members are pairwise mutually exclusive
#   (different event type, disjoint equality values, or disjoint numeric ranges on a shared
#   field -- decided statically and conservatively, see `_exclusive`).  In such a ruleset at
#   most one rule can match any event, so consumption never hides a match, and posting every
#   event to every ruleset fires exactly the matching pairs.  Greedy colouring needs 8
#   rulesets for the default 50 rules instead of 50 one-rule rulesets (~1.7x faster).
# * EVENTS, NOT FACTS.  Facts persist and re-join; events are consumed or dropped.  Every rule
#   is a single-event pattern, so an event either fires one action and is consumed, or matches
#   nothing (the post raises MessageNotHandledException, caught) and is not stored: session
#   state stays empty however long the stream (RSS flat over 100k events).
# * SESSION (sid) CAP.  State is kept per sid and a ruleset holds at most 1024 sessions: the
#   1025th distinct sid that needs state (its event matched) raises MemoryError -- until
#   `delete_state` frees one -- and posting on after that crashed the interpreter (SIGSEGV
#   in the background dispatcher thread).  Per-user sids
#   (2,000 users) are therefore impossible; bucketing users into <= 1000 sids works but halves
#   throughput (an action's session state is re-serialised per sid) and buys nothing for
#   stateless single-event rules.  We post without a sid, i.e. everything lands in durable's
#   default session "0" -- correct because no rule correlates events -- and the envelopes are
#   posted unmodified (no per-event copy to add a sid).
# * BACKGROUND DISPATCHER.  `durable.engine.Host()` (what `durable.lang.get_host()` builds)
#   starts two self-re-arming `threading.Timer` loops polling every ruleset for timers and
#   pending async actions; we use neither (actions run synchronously inside `post`).  They are
#   never stopped (threads leak per host), contend for the GIL (-5% events/s with our 8
#   rulesets, -20% with 50) and are where the post-sid-cap crash happened.  `_QuietHost` skips them.
# * DSL vs JSON.  `durable.lang` (`ruleset`/`when_all`/`m.data.total > x`) only builds the JSON
#   ruleset definition and registers it with the same `Host`; there is no `create_ruleset` in
#   lang 2.x.  Posting goes through identical code either way, so we build the JSON directly
#   (`{"all": [{"m": {"$and": [{"type": ...}, {"$gt": {"data.total": 100}}]}}]}` -- exactly
#   what the DSL emits) and keep it off the global `durable.lang` registry.
# * BATCHES.  `post_batch` with a mix of matching and non-matching events raises
#   MessageNotHandledException for the whole batch and leaves the matched actions pending
#   until some later call; kaskad consumes a stream event by event, so we post one by one.

_DURABLE_OPS: dict[str, str | None] = {
    "==": None,
    "!=": "$neq",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
}


@dataclass(frozen=True, slots=True)
class _Range:
    """What one rule admits on one field, for the static exclusivity test."""

    lo: float = -math.inf
    lo_incl: bool = True
    hi: float = math.inf
    hi_incl: bool = True
    eq: frozenset[str] | None = None  # None: any string
    ne: frozenset[str] = frozenset()
    strings: bool = False
    numbers: bool = False

    def add(self, cond: Cond) -> _Range:
        v = cond.value
        if isinstance(v, str):
            if cond.op == "==":
                eq = frozenset({v}) if self.eq is None else self.eq & {v}
                return replace(self, eq=eq, strings=True)
            if cond.op == "!=":
                return replace(self, ne=self.ne | {v}, strings=True)
            return replace(self, strings=True)  # string ordering: not analysed
        lo, lo_incl, hi, hi_incl = self.lo, self.lo_incl, self.hi, self.hi_incl
        if cond.op in (">", ">=", "==") and (v > lo or (v == lo and cond.op == ">")):
            lo, lo_incl = v, cond.op != ">"
        if cond.op in ("<", "<=", "==") and (v < hi or (v == hi and cond.op == "<")):
            hi, hi_incl = v, cond.op != "<"
        return replace(self, lo=lo, lo_incl=lo_incl, hi=hi, hi_incl=hi_incl, numbers=True)

    def disjoint(self, other: _Range) -> bool:
        if self.strings and other.strings:
            if self.eq is not None and other.eq is not None and not self.eq & other.eq:
                return True
            if self.eq is not None and self.eq <= other.ne:
                return True
            if other.eq is not None and other.eq <= self.ne:
                return True
        if self.numbers and other.numbers and not (self.strings or other.strings):
            lo, lo_open = max((self.lo, not self.lo_incl), (other.lo, not other.lo_incl))
            hi, hi_incl = min((self.hi, self.hi_incl), (other.hi, other.hi_incl))
            return lo > hi or (lo == hi and (lo_open or not hi_incl))
        return False


def _ranges(rule: RuleSpec) -> dict[tuple[str, ...], _Range]:
    out: dict[tuple[str, ...], _Range] = {}
    for cond in rule.conditions:
        out[cond.path] = out.get(cond.path, _Range()).add(cond)
    return out


def _exclusive(a: RuleSpec, b: RuleSpec) -> bool:
    """True only if no event can match both rules (conservative: False when unsure)."""
    if a.event_type != b.event_type:
        return True
    ra, rb = _ranges(a), _ranges(b)
    return any(ra[path].disjoint(rb[path]) for path in ra.keys() & rb.keys())


def exclusive_groups(rules: Sequence[RuleSpec]) -> list[list[int]]:
    """Partition rule indices into groups of pairwise mutually exclusive rules.

    Greedy colouring, most-overlapping rules first; deterministic.  Rules of different types
    never conflict, so this is in effect a colouring per event type.
    """
    overlap = [sum(not _exclusive(r, o) for o in rules) for r in rules]
    groups: list[list[int]] = []
    for i in sorted(range(len(rules)), key=lambda i: (-overlap[i], i)):
        for group in groups:
            if all(_exclusive(rules[i], rules[j]) for j in group):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _durable_term(cond: Cond) -> dict[str, Any]:
    if any("." in key or key.startswith("$") for key in cond.path):
        raise ValueError(f"path {cond.path!r} cannot be addressed in durable_rules")
    key = ".".join(("data", *cond.path))
    op = _DURABLE_OPS[cond.op]
    return {key: cond.value} if op is None else {op: {key: cond.value}}


def durable_rule_definition(rule: RuleSpec) -> dict[str, Any]:
    """The JSON `durable.lang` would emit for ``m.type == t & m.data.<path> <op> v & ...``."""
    terms = [{"type": rule.event_type}, *(_durable_term(c) for c in rule.conditions)]
    expr = terms[0] if len(terms) == 1 else {"$and": terms}
    return {"all": [{"m": expr}]}


@dataclass(slots=True)
class DurableRun:
    """Outcome of one durable_rules run (``per_rule`` in the order of the input rules)."""

    matches: int
    seconds: float
    per_rule: list[int]
    rulesets: int
    posts: int


def durable_rules_run(
    rules: Sequence[RuleSpec], events: Sequence[Event], *, route_by_type: bool = True
) -> DurableRun:
    """Build the partitioned durable_rules rulesets, post every event, count fired actions.

    ``route_by_type``: post an event only to the rulesets holding a rule of its type (a dict
    lookup, timed with the rest); False posts every event to every ruleset and lets durable
    reject the type itself.  Both give identical counts; routing is the faster configuration
    (~1.4x) and is the default so the peer is measured at its best.  Only the posting loop is
    timed; rule analysis, JSON building and ruleset registration are not.
    """
    from durable.engine import Host, MessageNotHandledException

    class _QuietHost(Host):  # type: ignore[misc]  # durable has no stubs
        def _run(self) -> None:
            """No background dispatcher/timer threads (see the module notes)."""

    per_rule = [0] * len(rules)

    def counter(index: int) -> Callable[[Any], None]:
        # durable inspects the arity: a one-argument callable is run synchronously in `post`.
        def fire(_closure: Any) -> None:
            per_rule[index] += 1

        return fire

    definitions: dict[str, dict[str, Any]] = {}
    route: dict[str, list[str]] = {}
    for g, group in enumerate(exclusive_groups(rules)):
        name = f"bench_{g:02d}"
        definitions[name] = {
            f"r{i}": {**durable_rule_definition(rules[i]), "run": counter(i)} for i in group
        }
        for event_type in sorted({rules[i].event_type for i in group}):
            route.setdefault(event_type, []).append(name)
    all_names = list(definitions)
    routes: dict[str, tuple[str, ...]] = {t: tuple(names) for t, names in route.items()}

    host = _QuietHost()
    host.register_rulesets(definitions)
    post = host.post
    posts = 0
    start = time.perf_counter()
    for event in events:
        targets = routes.get(event["type"], ()) if route_by_type else all_names
        posts += len(targets)
        for name in targets:
            try:  # noqa: SIM105 -- contextlib.suppress costs a call pair per post
                post(name, event)
            except MessageNotHandledException:
                pass  # no rule of this ruleset matches: durable drops the event
    seconds = time.perf_counter() - start
    return DurableRun(sum(per_rule), seconds, per_rule, len(definitions), posts)


def durable_rules_match(rules: Sequence[RuleSpec], events: Sequence[Event]) -> tuple[int, float]:
    """(actions fired, seconds of the posting phase) -- every matching (event, rule) fires."""
    run = durable_rules_run(rules, events)
    return run.matches, run.seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    n = int(args[0]) if args else 20_000
    rules = make_rules()
    events = make_events(n)
    expected = expected_matches(rules, events)
    run = durable_rules_run(rules, events)
    report = {
        "durable_rules_eps": round(n / run.seconds, 1) if run.seconds > 0 else None,
        "matches": run.matches,
        "expected": expected,
        "events": n,
        "durable_rules_seconds": round(run.seconds, 3),
        "rulesets": run.rulesets,
        "posts_per_event": round(run.posts / n, 2) if n else 0.0,
    }
    print(json.dumps(report))
    if run.matches != expected:
        truth = [sum(rule_matches(rule, e) for e in events) for rule in rules]
        for rule, got, want in zip(rules, run.per_rule, truth, strict=True):
            if got != want:
                print(f"MISMATCH {rule.name}: durable {got} != expected {want}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
