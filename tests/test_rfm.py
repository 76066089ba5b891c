"""RFM: quintile scores on known populations, the segment table, audiences that read it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from engine.lang.config import parse_config
from engine.lang.events import parse_event
from engine.lang.ruleset import load_ruleset
from engine.measure.rfm import SEGMENTS, recompute, resident, segment
from engine.simulate import Simulation
from tests.helpers import ev, profile

VIP_RULE = """
rule: vip
trigger: {event: vip.offer}
audience: user.rfm == 'champions'
steps:
  - send: {template: t, cascade: [email]}
"""
TEMPLATE = "template: t\nemail: {subject: Hi, text: Hello}\n"
QUIET = "policies: {quiet_hours: null, frequency_caps: []}"


def orders(user: str, day: int, count: int, revenue: float) -> list[dict[str, Any]]:
    """`count` orders adding up to `revenue`, the last one on 2026-11-<day>."""
    return [
        ev(
            "order.created",
            user,
            f"2026-11-{day - n:02d}T12:00:00Z",
            {"order_id": f"{user}-{n}", "total": revenue / count},
        )
        for n in range(count)
    ]


async def simulation(tmp_path: Path, events: list[dict[str, Any]]) -> Simulation:
    (tmp_path / "vip.yaml").write_text(VIP_RULE)
    (tmp_path / "t.yaml").write_text(TEMPLATE)
    rules = load_ruleset([tmp_path])
    assert not rules.problems
    sim = await Simulation.create(rules, parse_config(QUIET))
    await sim.run([parse_event(e, received_at=0.0) for e in events])
    return sim


FIVE = {
    # user: (day of the last order, orders, revenue) -> R, F, M by rank among five
    "c1": (25, 5, 500.0),  # R5 F5 M5: champions
    "c2": (24, 1, 10.0),  # R4 F1 M1: promising
    "c3": (23, 3, 300.0),  # R3 F3 M3: need_attention
    "c4": (22, 4, 400.0),  # R2 F4 M4: at_risk
    "c5": (21, 2, 200.0),  # R1 F2 M2: hibernating
}


async def test_quintiles_of_a_known_population_name_each_customer(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    for user, (day, count, revenue) in FIVE.items():
        events += [profile(user, "2026-11-01T00:00:00Z", email=f"{user}@x.test")]
        events += orders(user, day, count, revenue)
    # No orders: the shop's own segment stays.
    events.append(profile("shopper", "2026-11-01T00:00:00Z", rfm="vip"))
    sim = await simulation(tmp_path, events)
    try:
        result = await recompute(sim.store, resident(sim.ws))
        assert result.json() == {
            "customers": 5,
            "changed": 5,
            "segments": {
                "promising": 1,
                "need_attention": 1,
                "at_risk": 1,
                "champions": 1,
                "hibernating": 1,
            },
        }
        got = {u: sim.ws.users[u].profile for u in FIVE}
        assert {u: p["rfm"] for u, p in got.items()} == {
            "c1": "champions",
            "c2": "promising",
            "c3": "need_attention",
            "c4": "at_risk",
            "c5": "hibernating",
        }
        assert got["c4"]["rfm_scores"] == {"r": 2, "f": 4, "m": 4}
        assert sim.ws.users["shopper"].profile["rfm"] == "vip"
        # The profiles reached the store, and a second pass changes nothing.
        await sim.flush()
        again = await recompute(sim.store, resident(sim.ws))
        assert (again.customers, again.changed) == (5, 0)
    finally:
        await sim.close()


async def test_equal_values_share_their_middle_score(tmp_path: Path) -> None:
    # Four customers, two with the same order count: mid-ranks 1.5, 1.5, 3, 4 of 4 give
    # 1 + floor(5 * (r - 0.5) / 4) = 2, 2, 4, 5.
    events = []
    for user, count in (("a", 2), ("b", 2), ("c", 3), ("d", 4)):
        events += orders(user, 20, count, 120.0)
    sim = await simulation(tmp_path, events)
    try:
        await recompute(sim.store, resident(sim.ws), batch=3)
        scores = {u: sim.ws.users[u].profile["rfm_scores"] for u in "abcd"}
        assert {u: s["f"] for u, s in scores.items()} == {"a": 2, "b": 2, "c": 4, "d": 5}
        # Same last order time and revenue for all: the middle score, 3.
        assert {(s["r"], s["m"]) for s in scores.values()} == {(3, 3)}
    finally:
        await sim.close()


async def test_a_lone_customer_is_in_the_middle(tmp_path: Path) -> None:
    sim = await simulation(tmp_path, orders("solo", 20, 1, 10.0))
    try:
        result = await recompute(sim.store, resident(sim.ws))
        assert result.segments == {"need_attention": 1}
        assert sim.ws.users["solo"].profile["rfm_scores"] == {"r": 3, "f": 3, "m": 3}
    finally:
        await sim.close()


@pytest.mark.parametrize(
    ("r", "f", "m", "name"),
    [
        (5, 5, 5, "champions"),
        (5, 4, 3, "champions"),  # FM = round-half-up(3.5) = 4
        (5, 1, 1, "new"),
        (5, 2, 3, "potential_loyal"),
        (4, 5, 4, "loyal"),
        (4, 1, 1, "promising"),
        (3, 3, 3, "need_attention"),
        (3, 5, 5, "loyal"),
        (3, 1, 2, "about_to_sleep"),
        (2, 5, 5, "cant_lose"),
        (2, 3, 4, "at_risk"),
        (2, 1, 1, "hibernating"),
        (1, 2, 2, "hibernating"),
        (1, 1, 1, "lost"),
    ],
)
def test_segment_table(r: int, f: int, m: int, name: str) -> None:
    assert segment(r, f, m) == name


def test_every_score_has_a_named_segment() -> None:
    names = {segment(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    assert names == set(SEGMENTS)


async def test_an_audience_sees_the_recomputed_segment(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    for user, (day, count, revenue) in FIVE.items():
        events += [profile(user, "2026-11-01T00:00:00Z", email=f"{user}@x.test")]
        events += orders(user, day, count, revenue)
    events += [ev("vip.offer", u, "2026-11-26T10:00:00Z") for u in FIVE]
    sim = await simulation(tmp_path, events)
    try:
        assert sim.ws.records == []  # nobody has a segment yet
        await recompute(sim.store, resident(sim.ws))
        later = [ev("vip.offer", u, "2026-11-27T10:00:00Z") for u in FIVE]
        records = await sim.run([parse_event(e, received_at=0.0) for e in later])
        assert [(r.rule, r.user_id, r.status) for r in records] == [("vip", "c1", "sent")]
    finally:
        await sim.close()


async def test_profiles_with_non_finite_numbers_are_scored(tmp_path: Path) -> None:
    # JSON from Python may carry NaN/Infinity (a shop attribute here); SQLite's JSON
    # functions refuse them, RFM reads such a profile with them as null.
    events = [
        profile("odd", "2026-11-01T00:00:00Z", attributes={"score": math.nan, "x": math.inf}),
        *orders("odd", 20, 2, 30.0),
        *orders("plain", 21, 1, 10.0),
    ]
    sim = await simulation(tmp_path, events)
    try:
        await sim.flush()
        result = await recompute(sim.store, resident(sim.ws))
        assert result.customers == 2
        assert sim.ws.users["odd"].profile["rfm_scores"] == {"r": 2, "f": 4, "m": 4}
    finally:
        await sim.close()
