"""Stats on hand-built scenarios run through the real engine (simulate), exact numbers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from engine.clock import parse_time
from engine.errors import EventError, Problem
from engine.lang.config import Config, parse_config
from engine.lang.events import parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.measure.proportions import ci95, z_test
from engine.measure.stats import MAX_TIME, compute_stats, parse_bound
from engine.measure.stats_text import format_text
from engine.simulate import Simulation
from tests.helpers import ev, profile

TEMPLATE = "template: t\nemail: {subject: Hi, text: Hello}\nsms: {text: Hello}\n"
RULES = {
    "cart.yaml": """
rule: cart
description: Cart reminder
trigger: {event: cart.updated}
mode: restart
goal: {event: order.created}
exit_on: [{event: cart.cleared}]
steps:
  - wait: 1h
  - send: {template: t, cascade: [email]}
  - wait: 1d
  - send: {template: t, cascade: [email]}
""",
    "news.yaml": """
rule: news
trigger: {event: news.published}
steps:
  - send: {template: t, cascade: [email]}
""",
    "alert.yaml": """
rule: alert
category: transactional
trigger: {event: alert.raised}
steps:
  - send: {template: t, cascade: [email, sms]}
""",
    "promo.yaml": """
rule: promo
description: Promo A/B
trigger: {event: promo.started}
steps:
  - send:
      template: t
      cascade: [email]
      variants:
        - {name: A, weight: 50}
        - {name: B, weight: 50}
""",
}
QUIET = "policies: {quiet_hours: null, frequency_caps: []}"


def policies(extra: str) -> str:
    """Quiet hours and caps off, plus `extra` policies (YAML flow mapping items)."""
    return f"policies: {{quiet_hours: null, frequency_caps: [], {extra}}}"


DAY = "2026-11-23T"


def at(hhmmss: str) -> str:
    return f"{DAY}{hhmmss}Z"


def order(
    user: str, time: str, order_id: str | None, total: Any = 100, **data: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {**data}
    if order_id is not None:
        body["order_id"] = order_id
    if total is not None:
        body["total"] = total
    return ev("order.created", user, time, body)


def clicked(user: str, time: str, rule: str) -> dict[str, Any]:
    return ev("message.clicked", user, time, {"rule": rule, "channel": "email"})


def opened(user: str, time: str, rule: str) -> dict[str, Any]:
    return ev("message.opened", user, time, {"rule": rule, "channel": "email"})


def ruleset(tmp_path: Path) -> RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    for name, text in RULES.items():
        (folder / name).write_text(text)
    (folder / "t.yaml").write_text(TEMPLATE)
    rules = load_ruleset([folder])
    assert not rules.problems, rules.problems
    return rules


class Run:
    """A finished simulation whose in-memory store is still open for stats."""

    def __init__(self, sim: Simulation, rules: RuleSet, config: Config) -> None:
        self.sim, self.rules, self.config = sim, rules, config
        self.records: list[Any] = []

    async def stats(self, policies: str | None = None, **kwargs: Any) -> dict[str, Any]:
        config = parse_config(policies) if policies else self.config
        kwargs.setdefault("rules", self.rules)
        return await compute_stats(
            self.sim.store, policies=config.policies, now=self.sim.clock.now(), **kwargs
        )

    def profile(self, user: str) -> dict[str, Any]:
        return self.sim.ws.users[user].profile


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Any]:
    sims: list[Simulation] = []

    async def go(
        events: list[dict[str, Any]], config: str = QUIET, until: float | None = None
    ) -> Run:
        cfg = parse_config(config)
        rules = ruleset(tmp_path)
        sim = await Simulation.create(rules, cfg)
        sims.append(sim)
        result = Run(sim, rules, cfg)
        parsed = [parse_event(e, received_at=0.0) for e in events]
        result.records = await sim.run(parsed, until)
        return result

    yield go
    for sim in sims:
        await sim.close()


def rule(stats: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in stats["rules"] if r["rule"] == rule_id)


def three_touches(user: str) -> list[dict[str, Any]]:
    """cart mail 01:00 (clicked 02:00), news mail 01:30 (opened 03:00), alert 04:00 (sent
    only), an order at 05:00: the last click, open and send are three different messages."""
    return [
        profile(user, at("00:00:00"), email=f"{user}@x.test"),
        ev("cart.updated", user, at("00:00:00"), {"total": 10}),
        ev("news.published", user, at("01:30:00")),
        clicked(user, at("02:00:00"), "cart"),
        opened(user, at("03:00:00"), "news"),
        ev("alert.raised", user, at("04:00:00")),
        order(user, at("05:00:00"), "o1", 120.5),
    ]


@pytest.mark.parametrize(
    ("touch", "winner"), [("click", "cart"), ("open", "news"), ("send", "alert")]
)
async def test_an_order_goes_to_the_last_touch_of_the_configured_kind(
    run: Any, touch: str, winner: str
) -> None:
    r = await run(three_touches("u1"), policies(f"attribution: {{touch: {touch}}}"))
    stats = await r.stats()
    assert stats["attribution"] == {"window": "7d", "touch": touch}
    assert stats["orders"] == {
        "count": 1,
        "revenue": 120.5,
        "attributed": 1,
        "attributed_revenue": 120.5,
        "by_source": {
            "online": {"count": 1, "revenue": 120.5},
            "offline": {"count": 0, "revenue": 0.0},
        },
    }
    # Attributed once: exactly one rule (and one step, channel) converted.
    converted = {r["rule"]: r["funnel"]["converted"] for r in stats["rules"]}
    assert converted == {"alert": 0, "cart": 0, "news": 0, "promo": 0, winner: 1}
    won = rule(stats, winner)
    assert won["funnel"]["revenue"] == 120.5
    step = "1" if winner == "cart" else "0"  # the send's index in its rule's steps
    assert [(s["step"], s["channel"], s["converted"]) for s in won["steps"]] == [(step, "email", 1)]
    assert won["channels"][0]["converted"] == 1


async def test_funnel_counts_sends_reactions_and_instance_endings(run: Any) -> None:
    events = [
        *three_touches("u1"),
        # u2 clears the cart (exit); u3 restarts it once and then gets both mails; u4's
        # cart is still waiting at the end.
        profile("u2", at("00:00:00"), email="u2@x.test"),
        ev("cart.updated", "u2", at("00:00:00"), {"total": 10}),
        ev("cart.cleared", "u2", at("00:30:00")),
        profile("u3", at("00:00:00"), email="u3@x.test"),
        ev("cart.updated", "u3", at("00:00:00"), {"total": 10}),
        ev("cart.updated", "u3", at("00:10:00"), {"total": 20}),
        profile("u4", at("00:00:00")),  # no address: the first mail is skipped
        ev("cart.updated", "u4", at("23:00:00"), {"total": 10}),
    ]
    r = await run(events, until=parse_time("2026-11-24T23:30:00Z"))
    stats = await r.stats()
    cart = rule(stats, "cart")
    assert cart["name"] == "Cart reminder" and cart["state"] == "active"
    assert cart["instances"] == {
        "started": 5,
        "active": 1,
        "converted": 1,
        "exited": 1,
        "completed": 1,
        "expired": 0,
        "restarted": 1,  # u3's first cart
        "stopped": 0,
        "error": 0,
    }
    assert cart["skips"] == {"no_address": 1}
    assert [(s["step"], s["sends"], s["skipped"], s["skips"]) for s in cart["steps"]] == [
        ("1", 2, 1, {"no_address": 1}),
        ("3", 1, 0, {}),
    ]
    assert cart["funnel"] == {
        "sends": 3,
        "skipped": 1,
        "delivered": 1,
        "opened": 1,
        "clicked": 1,
        "converted": 1,
        "revenue": 120.5,
    }
    news = rule(stats, "news")
    assert news["instances"]["completed"] == 1
    assert news["name"] == "news"  # no description: the id
    assert (news["funnel"]["opened"], news["funnel"]["clicked"]) == (1, 0)
    # The alert has no address for sms: never tried, email was sent.
    assert rule(stats, "alert")["funnel"]["sends"] == 1
    assert rule(stats, "promo")["instances"]["started"] == 0
    assert rule(stats, "promo")["ab"] == {
        "baseline": "A",
        "min_sample": 100,
        "variants": [
            {
                "variant": "B",
                "users": 0,
                "conversion": {
                    "rate": 0.0,
                    "baseline_rate": 0.0,
                    "lift_abs": 0.0,
                    "lift_rel": None,
                    "p_value": None,
                    "ci95": None,
                },
                "clicks": {
                    "rate": 0.0,
                    "baseline_rate": 0.0,
                    "lift_abs": 0.0,
                    "lift_rel": None,
                    "p_value": None,
                    "ci95": None,
                },
            }
        ],
        "verdict": "Not enough data yet: 0 of 100 users per variant.",
    }
    assert rule(stats, "cart")["ab"] is None


async def test_the_window_edge_is_inclusive(run: Any) -> None:
    events = []
    for user, when in (("edge", "03:00:00"), ("late", "03:00:01")):
        events += [
            profile(user, at("00:00:00"), email=f"{user}@x.test"),
            ev("cart.updated", user, at("00:00:00"), {"total": 10}),
            clicked(user, at("02:00:00"), "cart"),
            order(user, at(when), f"{user}-o", 10),
        ]
    r = await run(events, policies("attribution: {window: 1h}"))
    stats = await r.stats()
    assert stats["attribution"]["window"] == "1h"
    assert (stats["orders"]["count"], stats["orders"]["attributed"]) == (2, 1)
    assert rule(stats, "cart")["funnel"]["converted"] == 1
    # The same data under a 2h window: both orders are attributed.
    wider = await r.stats(policies("attribution: {window: 2h}"))
    assert rule(wider, "cart")["funnel"]["converted"] == 2


async def test_a_resent_order_counts_once_in_stats_and_in_the_profile(run: Any) -> None:
    events = [
        *three_touches("u1"),
        # The shop retries the same order with a new event id, then the same event again.
        {**order("u1", at("05:10:00"), "o1", 120.5), "id": "retry-1"},
        {**order("u1", at("05:10:00"), "o1", 120.5), "id": "retry-1"},
        order("u1", at("06:00:00"), "o2", 10),
    ]
    r = await run(events)
    stats = await r.stats()
    assert (stats["orders"]["count"], stats["orders"]["revenue"]) == (2, 130.5)
    assert rule(stats, "cart")["funnel"]["converted"] == 2
    assert (r.profile("u1")["orders_count"], r.profile("u1")["revenue"]) == (2, 130.5)
    assert r.profile("u1")["recent_order_ids"] == ["o1", "o2"]
    assert r.sim.duplicates == 1


async def test_offline_orders_and_bad_totals_are_counted_without_revenue(run: Any) -> None:
    events = [
        profile("u1", at("00:00:00"), email="u1@x.test"),
        order("u1", at("01:00:00"), "shop-1", 30, source="offline", currency="EUR"),
        order("u1", at("02:00:00"), "neg", -10),
        order("u1", at("03:00:00"), "none", None),
        order("u1", at("05:00:00"), None, 7.5),  # no order id: the event counts
        order("u1", at("06:00:00"), "web", 0, source="online"),
    ]
    # A total that is not a finite number never gets this far: the event is refused.
    with pytest.raises(EventError, match=r"data\.total: must be a finite number"):
        parse_event(order("u1", at("04:00:00"), "nan", math.nan), received_at=0.0)
    r = await run(events)
    stats = await r.stats()
    assert stats["orders"] == {
        "count": 5,
        "revenue": 37.5,
        "attributed": 0,
        "attributed_revenue": 0.0,
        "by_source": {
            "online": {"count": 4, "revenue": 7.5},
            "offline": {"count": 1, "revenue": 30.0},
        },
    }
    assert (r.profile("u1")["orders_count"], r.profile("u1")["revenue"]) == (5, 37.5)
    assert r.profile("u1")["last_order_at"] == at("06:00:00")


async def test_revenue_of_orders_at_the_money_limit_stays_finite(run: Any) -> None:
    """Money is at most 1e15 an event (larger is refused), so sums stay finite and exact."""
    with pytest.raises(EventError, match=r"data\.total: must be a number from -1e15 to 1e15"):
        parse_event(order("u1", at("00:00:00"), "big", 1.7e308), received_at=0.0)
    events = [order("u1", at(f"0{i}:00:00"), f"o{i}", 1e15) for i in range(1, 4)]
    r = await run([profile("u1", at("00:00:00"), email="u1@x.test"), *events])
    orders = (await r.stats())["orders"]
    assert (orders["count"], orders["revenue"]) == (3, 3e15)
    assert r.profile("u1")["revenue"] == 3e15


async def test_rules_deleted_invalid_or_unknown_keep_their_data(run: Any) -> None:
    r = await run(three_touches("u1"))
    without_cart = RuleSet(rules={k: v for k, v in r.rules.rules.items() if k != "cart"})
    stats = await r.stats(rules=without_cart)
    cart = rule(stats, "cart")
    assert (cart["state"], cart["name"]) == ("deleted", "cart")
    assert cart["funnel"]["converted"] == 1 and cart["instances"]["started"] == 1
    invalid = RuleSet(
        rules=without_cart.rules, failed={"cart": [Problem("rules/cart.yaml", 3, 1, "bad")]}
    )
    assert rule(await r.stats(rules=invalid), "cart")["state"] == "invalid"
    # Without any rule set (no rules directory) every rule with data is listed as deleted.
    assert {x["state"] for x in (await r.stats(rules=None))["rules"]} == {"deleted"}
    one = await r.stats(rule="cart")
    assert [x["rule"] for x in one["rules"]] == ["cart"]
    assert (await r.stats(rule="nope"))["rules"] == []
    # Orders are not per rule: the rule filter leaves the orders block whole.
    assert one["orders"]["count"] == 1


async def test_ranges_count_each_row_on_its_own_time(run: Any) -> None:
    r = await run(three_touches("u1"))
    t = parse_time
    early = await r.stats(since=t(at("00:00:00")), until=t(at("01:15:00")))
    assert early["since"] == at("00:00:00") and early["until"] == at("01:15:00")
    assert rule(early, "cart")["funnel"]["sends"] == 1
    assert rule(early, "news")["funnel"]["sends"] == 0
    assert early["orders"]["count"] == 0  # the order came at 05:00
    late = await r.stats(since=t(at("04:30:00")))
    assert late["orders"]["count"] == 1 and rule(late, "cart")["funnel"]["sends"] == 0
    # The order in range is attributed to a message from before the range.
    assert rule(late, "cart")["funnel"]["converted"] == 1
    huge = await r.stats(since=-1e30, until=1e30)
    assert huge["since"] == "0001-01-01T00:00:00Z" and huge["until"] == "9999-12-31T23:59:59Z"
    assert rule(huge, "cart")["funnel"] == rule(await r.stats(), "cart")["funnel"]


def test_since_and_until_accept_iso_times_and_durations_before_now() -> None:
    now = parse_time("2026-11-23T12:00:00Z")
    assert parse_bound("-7d", now, "since") == now - 7 * 86400
    assert parse_bound("1d12h", now, "since") == now - 1.5 * 86400
    assert parse_bound("2026-11-01", now, "since") == parse_time("2026-11-01T00:00:00Z")
    assert parse_bound("-99999999999w", now, "since") == -62135596800.0
    assert parse_bound("9999-12-31T23:59:59Z", now, "until") == MAX_TIME
    for bad in ("yesterday", "-7x", "", "2026-13-01"):
        with pytest.raises(ValueError, match="since"):
            parse_bound(bad, now, "since")


# -- A/B ----------------------------------------------------------------------------------


def test_z_test_and_interval_against_hand_computed_values() -> None:
    # 10/100 against 20/100: pooled p = 0.15, SE = sqrt(0.15 * 0.85 * 0.02) = 0.0504975,
    # z = 0.1 / 0.0504975 = 1.980295, two-sided p = 2 * (1 - Phi(z)) = 0.0476704.
    p = z_test(10, 100, 20, 100)
    assert p is not None
    assert p == pytest.approx(0.0476704, abs=1e-7)
    assert p == pytest.approx(2 * (1 - NormalDist().cdf(0.1 / math.sqrt(0.15 * 0.85 * 0.02))))
    # Unpooled SE = sqrt(0.1 * 0.9 / 100 + 0.2 * 0.8 / 100) = 0.05; 0.1 +- 1.959964 * 0.05.
    low, high = ci95(10, 100, 20, 100) or (0, 0)
    assert (low, high) == (pytest.approx(0.0020018), pytest.approx(0.1979982))
    assert z_test(0, 100, 0, 100) is None  # nobody converted: undefined
    assert z_test(3, 0, 1, 10) is None and ci95(3, 0, 1, 10) is None


def promo_events(users: int, converts: dict[str, float], variant_of: dict[str, str]) -> list[Any]:
    """`users` users get the promo at 10:00; in variant V the first converts[V] share of its
    users (by user order) click at 11:00 and order at 12:00."""
    events: list[Any] = []
    seen: dict[str, int] = {}
    totals = {v: sum(1 for u in variant_of.values() if u == v) for v in converts}
    for n in range(users):
        user = f"p{n:03d}"
        events += [
            profile(user, at("09:00:00"), email=f"{user}@x.test"),
            ev("promo.started", user, at("10:00:00")),
        ]
        variant = variant_of.get(user)
        if variant is None:
            continue
        seen[variant] = seen.get(variant, 0) + 1
        if seen[variant] <= round(converts[variant] * totals[variant]):
            events += [
                clicked(user, at("11:00:00"), "promo"),
                order(user, at("12:00:00"), f"{user}-o", 50),
            ]
    return events


async def test_ab_lift_p_value_interval_and_verdict(run: Any) -> None:
    first = await run(promo_events(400, {}, {}))
    variant_of = {rec.user_id: rec.variant for rec in first.records}
    n = {v: sum(1 for x in variant_of.values() if x == v) for v in ("A", "B")}
    assert n["A"] + n["B"] == 400 and min(n.values()) >= 100
    r = await run(promo_events(400, {"A": 0.1, "B": 0.3}, variant_of))
    stats = await r.stats()
    promo = rule(stats, "promo")
    x = {v: round({"A": 0.1, "B": 0.3}[v] * n[v]) for v in ("A", "B")}
    assert [(v["variant"], v["users"], v["sends"], v["clicked"], v["converted"]) for v in
            promo["variants"]] == [("A", n["A"], n["A"], x["A"], x["A"]),
                                   ("B", n["B"], n["B"], x["B"], x["B"])]  # fmt: skip
    ab = promo["ab"]
    assert (ab["baseline"], ab["min_sample"]) == ("A", 100)
    conv = ab["variants"][0]["conversion"]
    p1, p2 = x["A"] / n["A"], x["B"] / n["B"]
    pooled = (x["A"] + x["B"]) / 400
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n["A"] + 1 / n["B"]))
    p_value = 2 * (1 - NormalDist().cdf(z))
    half = 1.959964 * math.sqrt(p1 * (1 - p1) / n["A"] + p2 * (1 - p2) / n["B"])
    assert conv["rate"] == round(p2, 4) and conv["baseline_rate"] == round(p1, 4)
    assert conv["lift_abs"] == round(p2 - p1, 4)
    assert conv["lift_rel"] == round((p2 - p1) / p1, 4)
    assert conv["p_value"] == pytest.approx(p_value, rel=1e-3)
    assert conv["ci95"] == [
        pytest.approx(p2 - p1 - half, abs=1e-4),
        pytest.approx(p2 - p1 + half, abs=1e-4),
    ]
    assert ab["variants"][0]["clicks"] == conv  # everyone who clicked also ordered
    assert ab["verdict"] == (
        f"B beats A on conversion: {(p2 - p1) * 100:+.1f} points "
        f"({(p2 - p1) / p1 * 100:+.0f}%), p < 0.001."
    )
    # Below the minimum sample nobody is called a winner.
    strict = await r.stats(policies("ab: {min_sample: 1000}"))
    assert rule(strict, "promo")["ab"]["verdict"] == (
        f"Not enough data yet: {min(n.values())} of 1000 users per variant."
    )
    # Equal rates: no winner, with the p-value said.
    same = await run(promo_events(400, {"A": 0.2, "B": 0.2}, variant_of))
    verdict = rule(await same.stats(), "promo")["ab"]["verdict"]
    assert verdict.startswith("No significant difference yet (p = ")


async def test_variants_in_the_data_but_not_in_the_rule_are_listed_after_it(run: Any) -> None:
    first = await run(promo_events(20, {}, {}))
    variant_of = {rec.user_id: rec.variant for rec in first.records}
    r = await run(promo_events(20, {"A": 0.5, "B": 0.5}, variant_of))
    # The rule now names C (and A) only: B's data stays, after the defined variants.
    changed = load_rule_text(
        r.rules,
        RULES["promo.yaml"].replace("{name: B, weight: 50}", "{name: C, weight: 50}"),
    )
    promo = rule(await r.stats(rules=changed), "promo")
    assert [v["variant"] for v in promo["variants"]] == ["A", "C", "B"]
    assert [v["variant"] for v in promo["ab"]["variants"]] == ["C", "B"]
    assert promo["variants"][1]["users"] == 0  # C: defined, no data yet
    assert promo["ab"]["verdict"].startswith("Not enough data yet: 0 of 100")


def load_rule_text(base: RuleSet, text: str) -> RuleSet:
    from engine.lang.rules import parse_rule
    from engine.lang.validation import Checker
    from engine.lang.yamlfile import load_yaml

    doc = load_yaml(text, "promo.yaml")
    parsed = parse_rule(doc, Checker("promo.yaml"), text)
    assert parsed is not None
    return RuleSet(rules={**base.rules, parsed.id: parsed}, templates=base.templates)


async def test_the_text_table_reads_as_a_report(run: Any) -> None:
    r = await run(three_touches("u1"))
    text = format_text(await r.stats(rule="cart"))
    assert text.splitlines()[1:] == [
        "attribution: the last click within 7d before the order",
        "orders: 1 (online 1, offline 0), revenue 120.50; attributed 1, revenue 120.50",
        "",
        "cart: Cart reminder  [active]",
        "  instances: started 1, active 0, converted 1, exited 0, completed 0, expired 0, "
        "restarted 0, stopped 0, error 0",
        "  STEP  NAME      CHANNEL  VARIANT  SENDS  SKIPPED  DELIVERED  OPENED  CLICKED"
        "  CONVERTED  REVENUE  SKIPS",
        "  all                                   1        0          1       1        1"
        "          1   120.50  -",
        "  1     email: t  email    -            1        0          1       1        1"
        "          1   120.50  -",
        "  CHANNEL  SENDS  SKIPPED  DELIVERED  OPENED  CLICKED  CONVERTED  REVENUE  SKIPS",
        "  email        1        0          1       1        1          1   120.50  -",
    ]
