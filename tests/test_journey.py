"""The journey view: step names (given and derived, validated), the counts the engine
keeps per step and way (in simulate, the same code path as the daemon), and the SVG drawn
for every shipped rule."""

from __future__ import annotations

import asyncio
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from engine.api.dashboard.journey import journey_svg
from engine.lang.config import parse_config
from engine.lang.events import parse_event
from engine.lang.program import BranchOp, JumpOp, WaitForOp
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.lang.schema import rule_schema
from engine.measure.stats_text import format_text
from engine.simulate import Simulation
from tests.helpers import QUIET_CONFIG, ev, profile

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
TEMPLATES = {
    "note": """\
        template: note
        email: {subject: Hi, text: "Hello {{ user.user_id }}"}
        sms: {text: Hello}
        mobile_push: {body: Hello}
        """,
}
PROBE = """\
rule: probe
description: every kind of step
trigger: {event: cart.updated}
goal: {event: order.created}
exit_on: [{event: cart.cleared}]
steps:
  - wait: 1h
    name: Let them think
  - if: trigger.data.total > 50
    then:
      - send: {template: note, cascade: [{channel: mobile_push, await: opened, within: 2h}, email]}
    else:
      - send: {template: note, cascade: [email]}
  - wait_for: {event: product.viewed, timeout: 1d}
    on_event:
      - send:
          template: note
          cascade: [email]
          variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    on_timeout:
      - if: user.orders_count > 2
        then:
          - stop: true
      - send: {template: note, cascade: [sms]}
  - wait: {until: "{{ trigger.data.due }}", offset: -1d, at: "10:00"}
  - send: {template: note, cascade: [email]}
"""


def load(tmp_path: Path, rule: str) -> RuleSet:
    root = tmp_path / "rules"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        (root / "templates" / f"{name}.yaml").write_text(textwrap.dedent(text))
    (root / "r.yaml").write_text(rule)
    return load_ruleset([root])


def probe(tmp_path: Path) -> Rule:
    ruleset = load(tmp_path, PROBE)
    assert not ruleset.problems, [str(p) for p in ruleset.problems]
    return ruleset.rules["probe"]


# -- names --------------------------------------------------------------------------------


def test_each_step_has_a_readable_name(tmp_path: Path) -> None:
    assert probe(tmp_path).step_names == {
        "0": "Let them think",
        "1": "if trigger.data.total > 50",
        "1.then.0": "mobile_push → email: note",
        "1.else.0": "email: note",
        "2": "wait for product.viewed (1d)",
        "2.on_event.0": "email: note, variants A, B",
        "2.on_timeout.0": "if user.orders_count > 2",
        "2.on_timeout.0.then.0": "stop",
        "2.on_timeout.1": "sms: note",
        "3": "wait until trigger.data.due - 1d at 10:00",
        "4": "email: note",
    }
    rule = probe(tmp_path)
    assert rule.step_name("0") == "Let them think"
    assert rule.step_name("9.then.0") == "9.then.0"  # not in this version: the path


def test_the_shipped_rules_names() -> None:
    rules = load_ruleset([ROOT / "rules"]).rules
    assert rules["abandoned_cart"].step_names == {
        "0": "wait 1h",
        "1": "email: cart_reminder",
        "2": "wait 3d",
        "3": "email → whatsapp: cart_promo, variants A, B",
    }
    assert rules["points_expiry"].step_names["1.then.0"] == "whatsapp → sms: points_expiry"
    assert rules["weekly_promo"].step_names["0"].startswith("email → mobile_push → webpush")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("42", "step name must be a non-empty string, got a number (42)"),
        ('""', "step name must be a non-empty string"),
        ("x" * 81, "step name is 81 characters long; at most 80"),
        ("Let them think", "duplicate step name 'Let them think' (also step 0)"),
    ],
)
def test_a_bad_step_name_is_an_error_at_its_place(tmp_path: Path, name: str, message: str) -> None:
    text = PROBE.replace(
        "  - wait: 1h\n    name: Let them think\n",
        f"  - wait: 1h\n    name: Let them think\n  - wait: 2h\n    name: {name}\n",
    )
    ruleset = load(tmp_path, text)
    problems = [str(p) for p in ruleset.problems]
    assert len(problems) == 1 and message in problems[0], problems
    assert re.match(r".*r\.yaml:10:\d+: ", problems[0]), problems  # file:line of the name


def test_a_name_of_80_characters_is_fine_and_the_schema_knows_names(tmp_path: Path) -> None:
    text = PROBE.replace("name: Let them think", "name: " + "y" * 80)
    assert not load(tmp_path, text).problems
    steps = rule_schema()["$defs"]["step"]["oneOf"]
    assert all(s["properties"]["name"]["maxLength"] == 80 for s in steps)


# -- counts in simulate ---------------------------------------------------------------------


def simulate(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        sim = await Simulation.create(ruleset, parse_config(QUIET_CONFIG))
        try:
            await sim.run([parse_event(e, received_at=0.0) for e in events])
            return await sim.stats()
        finally:
            await sim.close()

    return asyncio.run(go())


def test_simulate_counts_each_step_and_way(tmp_path: Path) -> None:
    ruleset = load(tmp_path, PROBE)
    t = "2026-11-23T09:00:00Z"
    users = [("big", 80), ("small", 20), ("gone", 20), ("buyer", 80)]
    events = [profile(u, t, email=f"{u}@shop.test", phone="+15550001111") for u, _ in users]
    events += [
        ev("cart.updated", u, t, {"total": total, "due": "2026-12-01T00:00:00Z"})
        for u, total in users
    ]
    events += [
        ev("cart.cleared", "gone", "2026-11-23T09:30:00Z"),
        ev("product.viewed", "big", "2026-11-23T11:00:00Z", {"product_id": "p1"}),
        ev("order.created", "buyer", "2026-11-23T12:00:00Z", {"order_id": "o1", "total": 5}),
        ev("profile.updated", "small", "2026-11-30T12:00:00Z", {}),
    ]
    stats = simulate(ruleset, events)
    (row,) = [r for r in stats["rules"] if r["rule"] == "probe"]
    journey = {j["step"]: j for j in row["journey"]}
    assert list(journey) == [
        "",
        "0",
        "1",
        "1.then.0",
        "1.else.0",
        "2",
        "2.on_event.0",
        "2.on_timeout.0",
        "2.on_timeout.0.then.0",
        "2.on_timeout.1",
        "3",
        "4",
    ]
    assert journey[""]["reached"] == 4 and journey[""]["name"] == "trigger"
    assert journey["0"] == {
        "step": "0",
        "name": "Let them think",
        "reached": 4,
        "edges": {},
        "ended": {"exited": 1},
    }
    assert journey["1"]["edges"] == {"then": 2, "else": 1}
    assert journey["1.then.0"]["reached"] == 2 and journey["1.else.0"]["reached"] == 1
    assert journey["2"]["reached"] == 3
    assert journey["2"]["edges"] == {"event": 1, "timeout": 1}
    assert journey["2"]["ended"] == {"converted": 1}  # the buyer, while waiting
    assert journey["2.on_timeout.0"]["edges"] == {"then": 0, "else": 1}
    assert journey["3"]["reached"] == 2 and journey["4"]["reached"] == 2
    assert journey[""]["ended"] == {"completed": 2}
    # the same counts as the instances' own: started, converted, exited, completed
    assert row["instances"]["started"] == journey[""]["reached"]
    ends = {k: sum(j["ended"].get(k, 0) for j in row["journey"]) for k in row["instances"]}
    assert all(ends[k] == row["instances"][k] for k in ("converted", "exited", "completed"))
    # the steps rows carry the names too, and so does the text report
    assert {s["step"]: s["name"] for s in row["steps"]}["1.then.0"] == "mobile_push → email: note"
    assert "mobile_push → email: note" in format_text(stats)


# -- the SVG --------------------------------------------------------------------------------


def boxes(svg: ET.Element) -> list[tuple[str, float, float, float, float]]:
    """(step, x, y, w, h) of each node, its translations added up."""
    out: list[tuple[str, float, float, float, float]] = []

    def walk(el: ET.Element, x: float, y: float) -> None:
        move = re.fullmatch(r"translate\(([-\d.]+),([-\d.]+)\)", el.get("transform", ""))
        if move:
            x, y = x + float(move.group(1)), y + float(move.group(2))
        if "jnode" in el.get("class", "").split():
            rect = el.find(f"{SVG}rect")
            assert rect is not None
            w, h = float(rect.get("width", 0)), float(rect.get("height", 0))
            out.append((el.get("data-step", "side"), x, y, w, h))
        for child in el:
            walk(child, x, y)

    walk(svg, 0.0, 0.0)
    return out


def check_drawing(rule: Rule, svg_text: str) -> ET.Element:
    svg = ET.fromstring(svg_text)
    width, height = float(svg.get("width", 0)), float(svg.get("height", 0))
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == f"Journey of {rule.id}"
    steps = [op.path for op in rule.program if not isinstance(op, JumpOp)]
    nodes = boxes(svg)
    assert [n[0] for n in nodes if n[0] != "side"] == ["", *steps, "$end"]
    for i, (step, x, y, w, h) in enumerate(nodes):
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height, step
        for other, ox, oy, ow, oh in nodes[i + 1 :]:
            apart = x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y
            assert apart, f"{step} overlaps {other}"
    for node in svg.iter(f"{SVG}g"):
        if "jnode" in node.get("class", ""):
            texts = [t.text or "" for t in node.iter(f"{SVG}text")]
            assert texts and all(t.strip() for t in texts)
            node_title = node.find(f"{SVG}title")
            assert node_title is not None and texts[0].rstrip("…") in (node_title.text or "")
    ways = [e for e in svg.iter(f"{SVG}g") if e.get("class") == "jedge"]
    forks = [op for op in rule.program if isinstance(op, BranchOp | WaitForOp)]
    assert len(ways) == 2 * len(forks)
    for step in steps:
        name = rule.step_name(step)
        shown = [t.text for t in svg.iter(f"{SVG}text")]
        assert any(t and name.startswith(t.rstrip("…")) for t in shown), name
    return svg


@pytest.mark.parametrize("rule_id", sorted(load_ruleset([ROOT / "rules"]).rules))
def test_every_shipped_rule_draws_readably(rule_id: str) -> None:
    rule = load_ruleset([ROOT / "rules"]).rules[rule_id]
    check_drawing(rule, str(journey_svg(rule, None)))


def test_the_probe_draws_its_numbers_on_steps_and_ways(tmp_path: Path) -> None:
    rule = probe(tmp_path)
    stats = {
        "journey": [
            {"step": "", "reached": 10, "edges": {}, "ended": {"completed": 3}},
            {"step": "1", "reached": 9, "edges": {"then": 6, "else": 3}, "ended": {}},
            {"step": "2", "reached": 8, "edges": {"event": 2, "timeout": 5}, "ended": {}},
            {"step": "3", "reached": 4, "edges": {}, "ended": {"converted": 2}},
        ],
        "steps": [
            {"step": "1.then.0", "channel": "mobile_push", "variant": None, "sends": 5,
             "skipped": 1, "delivered": 4, "opened": 2, "clicked": 1, "converted": 1,
             "skips": {"quiet_hours": 1}},
        ],
    }  # fmt: skip
    svg = check_drawing(rule, str(journey_svg(rule, stats)))
    node = {g.get("data-step"): g for g in svg.iter(f"{SVG}g") if "jnode" in g.get("class", "")}
    assert node["1"].get("data-reached") == "9"
    assert node["1.then.0"].get("data-sends") == "5"
    assert node["1.then.0"].get("data-skipped") == "1"
    # conversions from a step on: those the goal ended at it or at a step after it
    assert node["0"].get("data-converted-after") == "2"
    assert node["4"].get("data-converted-after") == "0"
    edges = {
        (g.get("data-step"), g.get("data-way")): g.get("data-n")
        for g in svg.iter(f"{SVG}g")
        if g.get("class") == "jedge"
    }
    assert edges[("1", "then")] == "6" and edges[("2", "timeout")] == "5"
    text = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    for shown in ("reached 9", "then · 6", "on timeout · 5", "skipped 1: quiet_hours 1",
                  "mobile_push: 5 sent · 4 delivered", "2 opened · 1 clicked", "completed 3",
                  "converted 2", "Let them think"):  # fmt: skip
        assert shown in text, shown


def test_hostile_text_is_escaped_in_the_drawing(tmp_path: Path) -> None:
    text = PROBE.replace("name: Let them think", "name: \"<script>alert('x')</script>\"")
    rule = load(tmp_path, text).rules["probe"]
    drawn = str(journey_svg(rule, None))
    assert "<script" not in drawn
    check_drawing(rule, drawn)
