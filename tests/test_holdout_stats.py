"""Holdouts measured (SPEC 12): the arithmetic against hand-computed values, and populations
with a known true effect run through `kaskad simulate --stats`."""

from __future__ import annotations

import json
import math
import random
import textwrap
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from engine.cli import main
from engine.clock import iso
from engine.core.variants import in_share
from engine.measure.holdout import holdout_json
from engine.measure.stats_text import format_text
from tests.helpers import QUIET_CONFIG, ROOT, ev, profile

# -- the arithmetic ----------------------------------------------------------------------


def test_lift_interval_p_value_and_increments_against_hand_computed_values() -> None:
    # Treatment 150 of 1000 converted (revenue 9,000), holdout 20 of 250 (revenue 1,000).
    # p_t = 0.15, p_h = 0.08: lift 0.07 (+87.5%).
    # Pooled p = 170 / 1250 = 0.136; SE = sqrt(0.136 * 0.864 * (1/1000 + 1/250))
    # = sqrt(0.00058752) = 0.0242388, z = 0.07 / 0.0242388 = 2.88793,
    # p = 2 * (1 - Phi(2.88793)) = 0.0038779.
    # Unpooled SE = sqrt(0.15 * 0.85 / 1000 + 0.08 * 0.92 / 250) = sqrt(0.0004219) = 0.0205402:
    # CI = 0.07 +- 1.959964 * 0.0205402 = [0.029742, 0.110258].
    # Incremental conversions (0.15 - 0.08) * 1000 = 70; revenue (9 - 4) * 1000 = 5,000.
    h = holdout_json(
        (1000, 150, 9000.0),
        (250, 20, 1000.0),
        share=20.0,
        converted_by="goal",
        min_sample=100,
        subject="The rule",
    )
    se = math.sqrt(0.136 * 0.864 * (1 / 1000 + 1 / 250))
    assert se == pytest.approx(0.0242388, abs=1e-7)
    assert h["p_value"] == 0.003878
    assert h["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(0.07 / se)), rel=1e-3)
    assert h["ci95"] == [0.0297, 0.1103]
    assert (h["lift_abs"], h["lift_rel"]) == (0.07, 0.875)
    assert h["treatment"] == {
        "users": 1000,
        "converted": 150,
        "rate": 0.15,
        "revenue": 9000.0,
        "revenue_per_user": 9.0,
    }
    assert h["holdout"]["rate"] == 0.08 and h["holdout"]["revenue_per_user"] == 4.0
    assert (h["incremental_conversions"], h["incremental_revenue"]) == (70.0, 5000.0)
    assert h["verdict"] == "The rule adds 7.0 pp conversion (95% CI 3.0..11.0 pp), p = 0.004."
    assert (h["share"], h["converted_by"], h["min_sample"]) == (20.0, "goal", 100)


def test_the_verdict_refuses_small_groups_and_claims_no_effect_without_one() -> None:
    def verdict(treatment: tuple[int, int, float], holdout: tuple[int, int, float]) -> str:
        return str(
            holdout_json(
                treatment,
                holdout,
                share=10.0,
                converted_by="order",
                min_sample=100,
                subject="The rule",
            )["verdict"]
        )

    assert verdict((900, 200, 0.0), (12, 1, 0.0)) == (
        "Not enough data yet: 12 of 100 users in the holdout."
    )
    assert verdict((40, 20, 0.0), (300, 1, 0.0)) == (
        "Not enough data yet: 40 of 100 users in the treatment group."
    )
    # 100 of 1000 against 26 of 250: p_t 0.100, p_h 0.104, lift -0.4 pp; pooled SE
    # sqrt(0.1008 * 0.8992 * 0.005) = 0.021288, z = -0.1879, p = 0.851; unpooled SE
    # sqrt(0.1 * 0.9 / 1000 + 0.104 * 0.896 / 250) = 0.021512, CI -0.4 +- 4.22 pp.
    assert verdict((1000, 100, 0.0), (250, 26, 0.0)) == (
        "No measurable effect: -0.4 pp (95% CI -4.6..3.8 pp), p = 0.851."
    )
    # A significant loss is said as such: 100 of 1000 against 50 of 250 (10% vs 20%).
    assert verdict((1000, 100, 0.0), (250, 50, 0.0)) == (
        "The rule lowers conversion by 10.0 pp (95% CI -15.3..-4.7 pp), p < 0.001."
    )
    assert verdict((500, 0, 0.0), (500, 0, 0.0)) == (
        "No measurable effect: nobody converted in either group."
    )
    empty = holdout_json(
        (0, 0, 0.0), (0, 0, 0.0), share=5.0, converted_by="order", min_sample=1, subject="x"
    )
    assert empty["p_value"] is None and empty["ci95"] is None
    assert empty["incremental_conversions"] is None and empty["incremental_revenue"] is None
    assert empty["verdict"] == "Not enough data yet: 0 of 1 users in the holdout."


# -- populations through simulate -----------------------------------------------------------

TEMPLATE = "template: t\nemail: {subject: hi, text: hello}\n"
PROMO = """\
rule: cart_promo
holdout: 20%
trigger: {event: cart.updated}
goal: {event: order.created}
steps:
  - send: {template: t, cascade: [email]}
  - wait: 2d
  - send: {template: t, cascade: [email]}
"""
START = 1_795_000_000  # 2026-11-18


def population(
    n: int, p_treatment: float, p_holdout: float, seed: int, held: Any
) -> tuple[list[dict[str, Any]], dict[str, list[int | float]]]:
    """`n` users with a cart each; a user orders 3 h later with the probability of their
    group (`held(user)` tells it, by the engine's stable hash). Returns the events and the
    truth per group: [users, converted, revenue]."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    truth: dict[str, list[int | float]] = {"treatment": [0, 0, 0.0], "holdout": [0, 0, 0.0]}
    for i in range(n):
        user = f"c{i:05d}"
        t = START + i * 20
        group = "holdout" if held(user) else "treatment"
        events.append(profile(user, iso(t), email=f"{user}@x.test"))
        events.append(ev("cart.updated", user, iso(t + 1), {"total": 40}))
        truth[group][0] += 1
        if rng.random() < (p_holdout if group == "holdout" else p_treatment):
            total = float(rng.randint(20, 120))
            events.append(
                ev("order.created", user, iso(t + 3 * 3600), {"order_id": f"o{i}", "total": total})
            )
            truth[group][1] += 1
            truth[group][2] += total
    events.sort(key=lambda e: e["time"])
    return events, truth


def simulate_stats(tmp_path: Path, rule: str, events: list[dict[str, Any]], config: str) -> Any:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "t.yaml").write_text(TEMPLATE)
    (rules / "rule.yaml").write_text(textwrap.dedent(rule))
    (tmp_path / "config.yaml").write_text(config)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    argv = ["simulate", "--events", str(path), "--rules", str(rules)]
    argv += ["--config", str(tmp_path / "config.yaml"), "--stats"]
    return argv


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 0
    stats: dict[str, Any] = json.loads(capsys.readouterr().out)
    return stats


def _rule(stats: dict[str, Any], rid: str) -> dict[str, Any]:
    [found] = [r for r in stats["rules"] if r["rule"] == rid]
    return found


def test_a_known_effect_shows_as_lift_with_its_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def held(user: str) -> bool:
        return in_share(f"holdout:cart_promo:{user}", 20)

    events, truth = population(4000, 0.15, 0.10, seed=7, held=held)
    argv = simulate_stats(tmp_path, PROMO, events, QUIET_CONFIG)
    stats = run_json(argv, capsys)
    h = _rule(stats, "cart_promo")["holdout"]
    for name in ("treatment", "holdout"):
        users, converted, revenue = truth[name]
        assert (h[name]["users"], h[name]["converted"]) == (users, converted)
        assert h[name]["revenue"] == pytest.approx(revenue)
    assert 700 < h["holdout"]["users"] < 900  # ~20% of 4,000
    assert (h["share"], h["converted_by"]) == (20.0, "goal")
    assert h["lift_abs"] == pytest.approx(0.05, abs=0.02)
    low, high = h["ci95"]
    assert low < 0.05 < high and low > 0
    assert h["p_value"] < 0.05
    n_t, x_t, money_t = truth["treatment"]
    n_h, x_h, money_h = truth["holdout"]
    assert h["incremental_conversions"] == pytest.approx((x_t / n_t - x_h / n_h) * n_t, abs=0.1)
    assert h["incremental_revenue"] == pytest.approx(
        (money_t / n_t - money_h / n_h) * n_t, abs=0.01
    )
    assert h["verdict"].startswith(f"The rule adds {h['lift_abs'] * 100:.1f} pp conversion")
    assert stats["global_holdout"] is None  # none configured
    # The text report says the same.
    capsys.readouterr()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "holdout 20%, converted by goal, at least 100 users per group" in text
    assert f"verdict: {h['verdict']}" in text
    # The README shows this run.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index('{\n  "share": 20.0') :]
    assert json.loads(block[: block.index("\n}\n") + 2]) == h
    shown = text[text.index("  holdout 20%") :].split("\n")[:6]
    assert "\n".join(shown) in readme


def test_no_effect_is_not_claimed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def held(user: str) -> bool:
        return in_share(f"holdout:cart_promo:{user}", 20)

    events, truth = population(4000, 0.12, 0.12, seed=11, held=held)
    stats = run_json(simulate_stats(tmp_path, PROMO, events, QUIET_CONFIG), capsys)
    h = _rule(stats, "cart_promo")["holdout"]
    assert h["holdout"]["converted"] == truth["holdout"][1]
    low, high = h["ci95"]
    assert low < 0 < high and h["p_value"] >= 0.05
    assert h["verdict"].startswith("No measurable effect: ")


NO_GOAL = """\
rule: cart_promo
holdout: 20%
trigger: {event: cart.updated}
steps:
  - send: {template: t, cascade: [email]}
"""


def test_without_a_goal_an_order_in_the_window_converts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def held(user: str) -> bool:
        return in_share(f"holdout:cart_promo:{user}", 20)

    # The instance ends at once (one send): the order 3 h later converts by the window.
    events, truth = population(1000, 0.3, 0.1, seed=3, held=held)
    config = QUIET_CONFIG + "  attribution: {window: 1d}\n  ab: {min_sample: 50}\n"
    stats = run_json(simulate_stats(tmp_path, NO_GOAL, events, config), capsys)
    h = _rule(stats, "cart_promo")["holdout"]
    assert h["converted_by"] == "order" and h["min_sample"] == 50
    assert [h[g]["converted"] for g in ("treatment", "holdout")] == [
        truth["treatment"][1],
        truth["holdout"][1],
    ]
    # An attribution window shorter than the wait before the orders: nobody converts.
    short = QUIET_CONFIG + "  attribution: {window: 1h}\n"
    stats = run_json(simulate_stats(tmp_path, NO_GOAL, events, short), capsys)
    h = _rule(stats, "cart_promo")["holdout"]
    assert h["treatment"]["converted"] == h["holdout"]["converted"] == 0
    assert h["treatment"]["revenue"] == 0.0


MARKETING = """\
rule: cart_promo
trigger: {event: cart.updated}
steps:
  - send: {template: t, cascade: [email]}
"""


def test_the_global_holdout_against_everyone_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def held(user: str) -> bool:
        return in_share(f"holdout:{user}", 10)

    events, truth = population(3000, 0.15, 0.08, seed=5, held=held)
    config = QUIET_CONFIG + "  global_holdout: 10%\n  attribution: {window: 1d}\n"
    argv = simulate_stats(tmp_path, MARKETING, events, config)
    stats = run_json(argv, capsys)
    g = stats["global_holdout"]
    assert _rule(stats, "cart_promo")["holdout"] is None  # the rule has none of its own
    for name in ("treatment", "holdout"):
        users, converted, revenue = truth[name]
        assert (g[name]["users"], g[name]["converted"]) == (users, converted)
        assert g[name]["revenue"] == pytest.approx(revenue)
    assert (g["share"], g["converted_by"]) == (10.0, "order")
    low, high = g["ci95"]
    assert low < 0.07 < high and g["p_value"] < 0.05
    assert g["verdict"].startswith("Marketing adds ")
    capsys.readouterr()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "global holdout 10%, converted by order" in text
    assert format_text(stats) == text
