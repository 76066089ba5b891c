"""Segments and interests (SPEC 12) in simulate: membership kept as events arrive and as
windows run out, segment.entered/left as triggers, user.segments in audiences."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.clock import parse_time as parse_time_
from engine.lang.ruleset import RuleSet, load_ruleset
from tests.helpers import ev, load_clean, profile, run_simulation, write_rules

Load = Callable[..., RuleSet]
END = 1830297600.0  # 2028-01-01: after every event here

TEMPLATE = """\
template: t
email: {subject: hi, text: "{{ user.segments }} {{ user.interests.category }}"}
"""
BABY = """\
segment: baby
any:
  - event: product.viewed
    if: event.data.category in ['baby_food', 'diapers']
    within: 30d
    at_least: 2
  - profile: user.attributes.child_age is defined and user.attributes.child_age < 3
"""
ON_ENTER = """\
rule: welcome
trigger: {event: segment.entered, if: "event.data.segment == 'baby'"}
steps:
  - send: {template: t, cascade: [email]}
"""
ON_LEAVE = """\
rule: goodbye
trigger: {event: segment.left, if: "event.data.segment == 'baby'"}
steps:
  - send: {template: t, cascade: [email]}
"""


@pytest.fixture
def load(tmp_path: Path) -> Load:
    return functools.partial(load_clean, tmp_path, TEMPLATE)


def view(user: str, time: str, category: str = "baby_food", **extra: Any) -> dict[str, Any]:
    return ev("product.viewed", user, time, {"product_id": "p1", "category": category, **extra})


def who(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["time"], r["rule"], r["user_id"]) for r in records if r["status"] == "sent"]


def test_a_window_count_enters_and_the_window_running_out_leaves(load: Load) -> None:
    events = [
        profile("u1", "2026-11-01T09:00:00Z", email="u1@x.test"),
        view("u1", "2026-11-01T10:00:00Z"),
        view("u1", "2026-11-01T11:00:00Z", category="shoes"),  # not counted
        view("u1", "2026-11-05T10:00:00Z", category="diapers"),  # the second: enters
    ]
    records = run_simulation(load(BABY, ON_ENTER, ON_LEAVE), events)
    assert who(records) == [
        ("2026-11-05T10:00:00Z", "welcome", "u1"),
        # 30 days after the first counted view, only one is left in the window
        ("2026-12-01T10:00:00Z", "goodbye", "u1"),
    ]


def test_a_profile_condition_follows_the_profile(load: Load) -> None:
    events = [
        profile("u2", "2026-11-01T09:00:00Z", email="u2@x.test", attributes={"child_age": 1}),
        ev("profile.updated", "u2", "2026-11-03T09:00:00Z", {"attributes": {"child_age": 4}}),
    ]
    records = run_simulation(load(BABY, ON_ENTER, ON_LEAVE), events)
    assert who(records) == [
        ("2026-11-01T09:00:00Z", "welcome", "u2"),
        ("2026-11-03T09:00:00Z", "goodbye", "u2"),
    ]


def test_all_needs_every_condition(load: Load) -> None:
    both = """\
    segment: baby
    all:
      - {event: product.viewed, within: 7d}
      - profile: "user.attributes.vip == true"
    """
    events = [
        profile("u1", "2026-11-01T09:00:00Z", email="u1@x.test"),
        view("u1", "2026-11-01T10:00:00Z"),
        ev("profile.updated", "u1", "2026-11-02T10:00:00Z", {"attributes": {"vip": True}}),
    ]
    records = run_simulation(load(both, ON_ENTER), events)
    assert who(records) == [("2026-11-02T10:00:00Z", "welcome", "u1")]


def test_user_segments_reads_in_an_audience(load: Load) -> None:
    rule = """\
    rule: promo
    trigger: {event: search.performed}
    audience: "'baby' in user.segments"
    steps:
      - send: {template: t, cascade: [email]}
    """
    events = [
        profile("u1", "2026-11-01T09:00:00Z", email="u1@x.test", attributes={"child_age": 2}),
        profile("u2", "2026-11-01T09:00:00Z", email="u2@x.test"),
        ev("search.performed", "u1", "2026-11-02T10:00:00Z", {"query": "x"}),
        ev("search.performed", "u2", "2026-11-02T10:00:00Z", {"query": "x"}),
    ]
    assert who(run_simulation(load(BABY, rule), events)) == [
        ("2026-11-02T10:00:00Z", "promo", "u1")
    ]


def test_interests_are_the_top_values_by_decayed_score(tmp_path: Path) -> None:
    import asyncio

    from engine.clock import parse_time
    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation

    events = [
        view("u1", "2026-11-01T10:00:00Z", category="shoes", brand="Acme"),
        ev(
            "cart.updated",
            "u1",
            "2026-11-02T10:00:00Z",
            {"items": [{"product_id": "p2", "category": "toys", "brand": "Lego"}], "total": 5},
        ),
        *(view("u1", f"2026-11-0{d}T10:00:00Z", category=f"c{d}") for d in range(3, 9)),
    ]

    async def run() -> dict[str, Any]:
        sim = await Simulation.create(RuleSet(), parse_config(""))
        until = parse_time("2026-11-09T00:00:00Z")  # before the interests age out
        await sim.run([parse_event(e, received_at=0) for e in events], until=until)
        interests: dict[str, Any] = sim.ws.users["u1"].profile["interests"]
        await sim.close()
        return interests

    interests = asyncio.run(run())
    # a cart (5) outweighs a view (1); newer views outweigh older ones
    assert interests["category"][0] == "toys"
    assert len(interests["category"]) == 5
    assert interests["category"][1:] == ["c8", "c7", "c6", "c5"]
    assert interests["brand"] == ["Lego", "Acme"]


def test_the_facts_kept_do_not_grow_with_the_history(tmp_path: Path) -> None:
    import asyncio
    import json

    from engine.clock import iso, parse_time
    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation

    root = tmp_path / "rules"
    root.mkdir()
    (root / "s.yaml").write_text(BABY)
    rules = load_ruleset([root])

    start = parse_time("2026-01-01T10:00:00Z")

    async def size(days: int) -> int:
        events = [view("u1", iso(start + d * 86400), brand=f"b{d % 7}") for d in range(days)]
        sim = await Simulation.create(rules, parse_config(""))
        await sim.run([parse_event(e, received_at=0) for e in events], until=END)
        n = len(json.dumps(sim.ws.users["u1"].facts))
        await sim.close()
        return n

    small, large = asyncio.run(size(10)), asyncio.run(size(300))
    assert large <= small + 50  # a few timestamps and scores, whatever the history


def test_bad_segment_files_are_located(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    root.mkdir()
    (root / "s.yaml").write_text(
        "segment: s\nany:\n  - {event: product.veiwed, within: 30d}\n"
        "  - {event: cart.updated, within: 401d}\n"
        "  - {event: cart.updated, within: 1d, at_least: 0}\n"
    )
    (root / "r.yaml").write_text(
        "rule: s\ntrigger: {event: search.performed}\n"
        "audience: \"'nosuch' in user.segments\"\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    (root / "t.yaml").write_text(TEMPLATE)
    problems = sorted(str(p) for p in load_ruleset([root]).problems)
    text = "\n".join(problems)
    assert "s.yaml:3:13: any[0].event: unknown event type 'product.veiwed' (did you mean " in text
    assert "s.yaml:4:35: any[1].within must be more than 0 and at most 400d, got '401d'" in text
    assert "s.yaml:5:49: any[2].at_least must be a whole number from 1 to 1000, got '0'" in text
    assert "r.yaml:3:11: unknown segment 'nosuch': no segment file defines it" in text


def test_a_segment_id_is_its_own(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    root.mkdir()
    (root / "s.yaml").write_text("segment: t\nany: [{event: cart.updated, within: 1d}]\n")
    (root / "s2.yaml").write_text("segment: r\nany: [{event: cart.updated, within: 1d}]\n")
    (root / "t.yaml").write_text(TEMPLATE)
    (root / "r.yaml").write_text(
        "rule: r\ntrigger: {event: search.performed}\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    text = "\n".join(str(p) for p in load_ruleset([root]).problems)
    assert "segment id 't' is also a template" in text
    assert "r.yaml:1:7: rule id 'r' is also a segment" in text


def test_a_deleted_segment_reports_the_rules_that_use_it_and_the_rest_run(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    root.mkdir()
    (root / "t.yaml").write_text(TEMPLATE)
    (root / "uses.yaml").write_text(
        "rule: uses\ntrigger: {event: search.performed}\n"
        "audience: \"'baby' in user.segments\"\nsteps: [{send: {template: t, cascade: [email]}}]\n"
    )
    (root / "other.yaml").write_text(
        "rule: other\ntrigger: {event: search.performed}\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    ruleset = load_ruleset([root])
    assert set(ruleset.rules) == {"other"}
    assert [p.path.endswith("uses.yaml") for p in ruleset.problems] == [True]
    assert ruleset.problems[0].message == (
        "unknown segment 'baby': no segment file defines it; rule 'uses' reads it"
    )


def problems_of(tmp_path: Path, *files: str) -> list[str]:
    root = write_rules(tmp_path, TEMPLATE, *files)
    return [str(p).split("rules/", 1)[1] for p in load_ruleset([root]).problems]


def test_a_segment_that_depends_on_itself_is_a_load_error(tmp_path: Path) -> None:
    flip = "segment: flip\nany: [{profile: \"'flip' not in user.segments\"}]\n"
    ping = (
        "segment: ping\nany:\n  - event: segment.entered\n"
        "    if: event.data.segment == 'pong'\n    within: 1d\n"
    )
    pong = (
        "segment: pong\nany:\n  - {event: segment.entered, within: 1d,"
        " if: \"event.data.segment in ['ping']\"}\n"
    )
    every = "segment: many\nany: [{profile: 'user.segments | length > 2'}]\n"
    unnamed = "segment: any_entered\nany: [{event: segment.left, within: 1d}]\n"
    unknown = (
        "segment: reader\nany: [{event: segment.entered, within: 1d,"
        " if: \"event.data.segment == 'nosuch'\"}]\n"
    )
    uses = (
        "rule: uses\ntrigger: {event: search.performed}\n"
        "audience: \"'reader' in user.segments\"\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    problems = problems_of(tmp_path, flip, ping, pong, every, unnamed, unknown, uses)
    cycle = (
        "depends on itself ({}): a segment may read other segments (user.segments, "
        "segment.entered/left) but not, directly or through others, itself; name the "
        "segments it reads"
    )
    whole = (
        "a segment reads other segments by name ('x' in user.segments, "
        "event.data.segment == 'x'), not all of them: it is one of them"
    )
    assert problems[:-1] == [
        f"f0.yaml:1:1: segment 'flip' {cycle.format('flip -> flip')}",
        f"f1.yaml:1:1: segment 'ping' {cycle.format('ping -> pong -> ping')}",
        f"f3.yaml:2:17: {whole}",
        f"f4.yaml:2:15: {whole}",
        "f5.yaml:2:48: unknown segment 'nosuch': no segment file defines it",
    ], "\n".join(problems)
    assert problems[-1].startswith("f6.yaml:3:11: segment 'reader' has problems (")
    assert problems[-1].endswith("f5.yaml); rule 'uses' reads it")


def test_segments_read_segments_in_a_chain_of_any_length(load: Load) -> None:
    chain = ["segment: c0\nany: [{event: search.performed, within: 1d}]\n"]
    for i in range(1, 6):
        chain.append(
            f"segment: c{i}\nany: [{{event: segment.entered, within: 1d,"
            f" if: \"event.data.segment == 'c{i - 1}'\"}}]\n"
        )
    # and one that reads the end of the chain from the profile
    chain.append("segment: end\nall: [{profile: \"'c5' in user.segments\"}]\n")
    rule = """\
    rule: last
    trigger: {event: segment.entered, if: "event.data.segment == 'end'"}
    steps:
      - send: {template: t, cascade: [email]}
    """
    events = [
        profile("u1", "2026-11-01T09:00:00Z", email="u1@x.test"),
        ev("search.performed", "u1", "2026-11-02T10:00:00Z", {"query": "x"}),
    ]
    assert who(run_simulation(load(*chain, rule), events)) == [
        ("2026-11-02T10:00:00Z", "last", "u1")
    ]


def test_a_segment_counts_only_event_types_that_exist(tmp_path: Path) -> None:
    segment = """\
    segment: s
    any:
      - {event: order.placed, within: 30d}
      - {event: product.price_dropped, within: 30d}
      - {event: loyalty.tier_changed, within: 30d}
    """
    assert problems_of(tmp_path, segment) == [
        "f0.yaml:3:13: any[0].event: unknown event type 'order.placed' "
        "(kaskad's 'order.' events are order.created)",
        "f0.yaml:4:13: any[1].event: product.price_dropped is a product event without a "
        "user: a segment counts a user's own events",
    ]


def test_an_interest_leaves_90_days_after_its_own_last_event(tmp_path: Path) -> None:
    import asyncio

    from engine.clock import parse_time
    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation

    events = [
        view("u1", "2026-01-01T10:00:00Z", category="shoes"),
        view("u1", "2026-03-20T10:00:00Z", category="toys"),
    ]

    async def at(time: str) -> list[str]:
        sim = await Simulation.create(RuleSet(), parse_config(""))
        await sim.run([parse_event(e, received_at=0) for e in events], until=parse_time(time))
        top: list[str] = sim.ws.users["u1"].profile["interests"]["category"]
        await sim.close()
        return top

    assert asyncio.run(at("2026-04-01T09:59:59Z")) == ["toys", "shoes"]
    assert asyncio.run(at("2026-04-01T10:00:00Z")) == ["toys"]  # 90 days after the shoes


def test_a_user_with_100k_events_keeps_a_bounded_facts_row(tmp_path: Path) -> None:
    from engine.core.model import UserState
    from engine.core.segments import SegmentEngine
    from engine.core.workspace import Workspace
    from engine.lang.events import Event
    from engine.store.rows import dumps

    root = tmp_path / "rules"
    root.mkdir()
    (root / "s.yaml").write_text(
        "segment: s\nany:\n"
        "  - {event: product.viewed, if: \"event.data.kind == 'baby'\", within: 30d, at_least: 5}\n"
        "  - {event: cart.updated, within: 400d, at_least: 3}\n"
    )
    engine = SegmentEngine(load_ruleset([root]).segments)
    st = UserState("u1", {"user_id": "u1"})
    start = parse_time_("2026-01-01T00:00:00Z")
    sizes = {}
    for i in range(100_000):
        now = start + i * 60
        etype = "product.viewed" if i % 2 else "cart.updated"
        data = {"product_id": "p", "kind": "baby" if i % 3 else "other"}
        engine.on_event(
            Workspace(now=now), st, Event(type=etype, time=now, user_id="u1", data=data)
        )
        if i + 1 in (1_000, 100_000):
            sizes[i + 1] = len(dumps(st.facts) or "")
    assert sizes[100_000] == sizes[1_000] < 400  # the stored row: a few timestamps
    assert st.profile["segments"] == ["s"]


def test_interests_stay_bounded_whatever_the_values(tmp_path: Path) -> None:
    import asyncio
    import json

    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation

    hostile: list[Any] = ["x" * 5000, 42, ["a", "b"], {"deep": {"er": 1}}, None, "", "  "]
    items = [
        {"product_id": f"p{i}", "category": f"c{i:04d}", "brand": v}
        for i, v in enumerate(hostile * 40)
    ]
    events = [view("u1", "2026-11-01T10:00:00Z", category=v, brand=v) for v in hostile] + [
        ev("cart.updated", "u1", "2026-11-02T10:00:00Z", {"items": items, "total": 1})
    ]

    async def run() -> tuple[dict[str, Any], int]:
        sim = await Simulation.create(RuleSet(), parse_config(""))
        until = parse_time_("2026-11-03T00:00:00Z")  # before they age out
        await sim.run([parse_event(e, received_at=0) for e in events], until=until)
        st = sim.ws.users["u1"]
        await sim.close()
        return st.profile["interests"], len(json.dumps(st.facts))

    interests, facts = asyncio.run(run())
    assert len(interests["category"]) == 5 and interests["brand"] == ["x" * 100]
    assert all(isinstance(v, str) and len(v) <= 100 for v in interests["category"])
    assert facts < 6000  # at most 30 values of 100 characters per kind


async def test_simulate_and_the_daemon_agree_on_membership_to_the_second(tmp_path: Path) -> None:
    from engine.clock import iso
    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation, record_json
    from tests.test_experiments import _advance_to, _daemon, _messages, _post

    root = tmp_path / "rules"
    root.mkdir()
    (root / "t.yaml").write_text(TEMPLATE)
    for name, text in (("s", BABY), ("in", ON_ENTER), ("out", ON_LEAVE)):
        (root / f"{name}.yaml").write_text(text)
    t0 = parse_time_("2026-11-23T10:00:00Z")
    VIEW = {"product_id": "p1"}
    plan = [  # (seconds after t0, event)
        (0, {"type": "profile.updated", "user_id": "u1", "data": {"email": "a@x"}}),
        (
            60,
            {"type": "product.viewed", "user_id": "u1", "data": {**VIEW, "category": "baby_food"}},
        ),
        (
            3600,
            {"type": "product.viewed", "user_id": "u1", "data": {**VIEW, "category": "diapers"}},
        ),
    ]
    expiry = t0 + 60 + 30 * 86400  # the first counted view leaves the window
    daemon = await _daemon(tmp_path, root, t0)
    seen = []
    for offset, event in plan:
        await _advance_to(daemon, t0 + offset)
        await _post(daemon, [event])
    for when in (expiry - 1, expiry):
        await _advance_to(daemon, when)
        users = await daemon.store.load_users(["u1"], messages_since=0.0, starts_since=0.0)
        seen.append((iso(when), users["u1"].profile.get("segments"), users["u1"].facts_due))
    await daemon.stop()
    daemon_sends = [(u, s) for u, s, _ in _messages(tmp_path / "kaskad.db", "welcome")]
    daemon_sends += [(u, s) for u, s, _ in _messages(tmp_path / "kaskad.db", "goodbye")]

    events = [{**e, "time": iso(t0 + offset)} for offset, e in plan]
    sim = await Simulation.create(load_ruleset([root]), parse_config(""))
    records = [
        record_json(r) for r in await sim.run([parse_event(e, received_at=0) for e in events])
    ]
    await sim.close()
    assert seen == [
        (iso(expiry - 1), ["baby"], expiry),
        (iso(expiry), [], t0 + 60 + 90 * 86400),  # next: the first view's interests age out
    ]
    assert [(r["time"], r["rule"]) for r in records] == [
        (iso(t0 + 3600), "welcome"),
        (iso(expiry), "goodbye"),
    ]
    assert daemon_sends == [("u1", "sent"), ("u1", "sent")]
