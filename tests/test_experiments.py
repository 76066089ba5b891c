"""Experiments and audiences (SPEC 12) in simulate: variants with their own audience, holdouts,
groups with priority, the one-off broadcast."""

from __future__ import annotations

import functools
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.clock import parse_time
from engine.lang.ruleset import RuleSet, load_ruleset
from tests.helpers import QUIET_CONFIG, brief, ev, load_clean, profile, run_simulation, write_rules

Load = Callable[..., RuleSet]
TEMPLATE = "template: t\nemail: {subject: hi, text: hello}\n"


@pytest.fixture
def load(tmp_path: Path) -> Load:
    return functools.partial(load_clean, tmp_path, TEMPLATE)


def users(n: int, time: str = "2026-11-01T08:00:00Z", **data: Any) -> list[dict[str, Any]]:
    return [profile(f"u{i:03d}", time, email=f"u{i}@x.test", **data) for i in range(n)]


def search(user: str, time: str = "2026-11-02T10:00:00Z") -> dict[str, Any]:
    return ev("search.performed", user, time, {"query": "x"})


VARIANT_AUDIENCES = """\
rule: promo
trigger: {event: search.performed}
steps:
  - send:
      template: t
      cascade: [email]
      variants:
        - {name: crm, audience: "user.attributes.child_age is defined"}
        - {name: vip, audience: "user.attributes.vip == true"}
"""


def test_a_user_is_split_among_the_variants_whose_audience_they_match(load: Load) -> None:
    events = [
        profile("a", "2026-11-01T08:00:00Z", email="a@x", attributes={"child_age": 1}),
        profile("b", "2026-11-01T08:00:00Z", email="b@x", attributes={"vip": True}),
        profile("c", "2026-11-01T08:00:00Z", email="c@x"),
        *(search(u) for u in "abc"),
    ]
    records = run_simulation(load(VARIANT_AUDIENCES), events)
    assert [(r["user_id"], r["variant"], r["status"], r["reason"]) for r in records] == [
        ("a", "crm", "sent", None),
        ("b", "vip", "sent", None),
        ("c", None, "skipped", "no_variant"),
    ]


def test_a_user_in_both_audiences_is_split_by_weight_and_stays(load: Load) -> None:
    both = {"child_age": 1, "vip": True}
    events = [
        *users(400, attributes=both),
        *(search(f"u{i:03d}") for i in range(400)),
        *(search(f"u{i:03d}", "2026-11-03T10:00:00Z") for i in range(400)),
    ]
    records = run_simulation(load(VARIANT_AUDIENCES), events)
    first = {r["user_id"]: r["variant"] for r in records[:400]}
    again = {r["user_id"]: r["variant"] for r in records[400:]}
    assert first == again  # stable
    counts = Counter(first.values())
    assert set(counts) == {"crm", "vip"} and min(counts.values()) > 150


def test_an_audience_no_user_can_match_is_a_load_error(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "t.yaml").write_text(TEMPLATE)
    (root / "r.yaml").write_text(VARIANT_AUDIENCES.replace("user.attributes.vip == true", "1 > 2"))
    problems = [str(p) for p in load_ruleset([root]).problems]
    assert len(problems) == 1 and problems[0].endswith(
        "r.yaml:9:33: variant 'vip': audience '1 > 2' is false for every user"
    ), problems


HOLDOUT = """\
rule: promo
holdout: 20%
trigger: {event: search.performed}
goal: {event: order.created}
steps:
  - send: {template: t, cascade: [email]}
  - wait: 1d
  - send: {template: t, cascade: [email]}
"""


def test_a_holdout_runs_the_same_steps_and_sends_nothing(load: Load) -> None:
    events = [*users(500), *(search(f"u{i:03d}") for i in range(500))]
    records = run_simulation(load(HOLDOUT), events)
    by_user: dict[str, list[tuple[str, str, str | None]]] = {}
    for r in records:
        by_user.setdefault(r["user_id"], []).append((r["step"], r["status"], r["reason"]))
    held = [u for u, rows in by_user.items() if rows[0][1] == "skipped"]
    assert 70 < len(held) < 130  # ~20% of 500, stable by user
    for user, rows in by_user.items():
        if user in held:
            assert rows == [("0", "skipped", "held_out"), ("2", "skipped", "held_out")]
        else:
            assert rows == [("0", "sent", None), ("2", "sent", None)]
    again = run_simulation(load(HOLDOUT), events)
    assert sorted({r["user_id"] for r in again if r["reason"] == "held_out"}) == sorted(held)


def test_holdout_must_be_a_share_up_to_half(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "t.yaml").write_text(TEMPLATE)
    (root / "r.yaml").write_text(HOLDOUT.replace("20%", "60%"))
    problems = [str(p) for p in load_ruleset([root]).problems]
    assert [p.split("r.yaml:")[1] for p in problems] == [
        "2:10: holdout must be a share from 0% to 50% with its percent sign, e.g. 10%, got '60%'"
    ]


def test_the_global_holdout_keeps_a_share_of_users_out_of_all_marketing(load: Load) -> None:
    transactional = """\
    rule: receipt
    category: transactional
    trigger: {event: search.performed}
    steps:
      - send: {template: t, cascade: [email]}
    """
    config = QUIET_CONFIG + "  global_holdout: 10%\n"
    events = [*users(300), *(search(f"u{i:03d}") for i in range(300))]
    records = run_simulation(
        load(HOLDOUT.replace("holdout: 20%\n", ""), transactional), events, config
    )
    held = {r["user_id"] for r in records if r["reason"] == "held_out"}
    assert 15 < len(held) < 50
    assert all(r["rule"] == "promo" for r in records if r["reason"] == "held_out")
    assert sum(1 for r in records if r["rule"] == "receipt" and r["status"] == "sent") == 300


GROUP_HIGH = """\
rule: high
group: cart
priority: 10
trigger: {event: cart.updated}
steps:
  - wait: 1h
  - send: {template: t, cascade: [email]}
"""
GROUP_LOW = """\
rule: low
group: cart
trigger: {event: search.performed}
steps:
  - wait: 30m
  - send: {template: t, cascade: [email]}
"""


def test_a_higher_priority_preempts_and_a_lower_one_is_busy(load: Load) -> None:
    cart = {"items": [{"product_id": "p1"}], "total": 1}
    events = [
        profile("u1", "2026-11-01T08:00:00Z", email="u1@x"),
        search("u1", "2026-11-02T10:00:00Z"),  # low starts
        ev("cart.updated", "u1", "2026-11-02T10:10:00Z", cart),  # high preempts it
        search("u1", "2026-11-02T10:20:00Z"),  # low: the group is busy
    ]
    records = run_simulation(load(GROUP_HIGH, GROUP_LOW), events)
    assert brief(records) == [
        ("2026-11-02T10:20:00Z", "low", "u1", "trigger", None, "skipped", "group_busy"),
        ("2026-11-02T11:10:00Z", "high", "u1", "1", "email", "sent", None),
    ]


def test_the_group_is_free_again_when_the_chain_ends(load: Load) -> None:
    events = [
        profile("u1", "2026-11-01T08:00:00Z", email="u1@x"),
        search("u1", "2026-11-02T10:00:00Z"),
        search("u1", "2026-11-02T12:00:00Z"),
    ]
    records = run_simulation(load(GROUP_HIGH, GROUP_LOW), events)
    assert [(r["time"], r["rule"], r["status"]) for r in records] == [
        ("2026-11-02T10:30:00Z", "low", "sent"),
        ("2026-11-02T12:30:00Z", "low", "sent"),
    ]


ONE_OFF = """\
rule: xmas
trigger: {schedule: {at: "2026-12-24T10:00:00+03:00"}}
audience: user.email is not none
steps:
  - send: {template: t, cascade: [email]}
"""


def test_a_one_off_broadcast_fires_once_at_its_instant(load: Load) -> None:
    events = [
        *users(3),
        profile("late", "2026-12-30T08:00:00Z", email="late@x"),  # after: not reached
    ]
    records = run_simulation(load(ONE_OFF), events, until=parse_time("2027-12-31T00:00:00Z"))
    assert {(r["time"], r["status"]) for r in records} == {("2026-12-24T07:00:00Z", "sent")}
    assert len(records) == 3


def test_at_must_be_an_iso_time(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "t.yaml").write_text(TEMPLATE)
    (root / "r.yaml").write_text(ONE_OFF.replace("2026-12-24T10:00:00+03:00", "24.12.2026"))
    problems = [str(p).split("r.yaml:")[1] for p in load_ruleset([root]).problems]
    assert problems == [
        "2:26: schedule.at: '24.12.2026' is not an ISO 8601 time, e.g. 2026-12-24T10:00:00+03:00"
    ]


def test_one_event_triggering_two_rules_of_a_group_starts_only_the_higher(load: Load) -> None:
    first = """\
    rule: a_low
    group: g
    trigger: {event: search.performed}
    steps:
      - send: {template: t, cascade: [email]}
      - wait: 1d
    """
    second = """\
    rule: b_high
    group: g
    priority: 5
    trigger: {event: search.performed}
    steps:
      - send: {template: t, cascade: [email]}
      - wait: 1d
    """
    events = [profile("u1", "2026-11-01T08:00:00Z", email="u1@x"), search("u1")]
    assert brief(run_simulation(load(first, second), events)) == [
        ("2026-11-02T10:00:00Z", "b_high", "u1", "0", "email", "sent", None),
        ("2026-11-02T10:00:00Z", "a_low", "u1", "trigger", None, "skipped", "group_busy"),
    ]


# -- the daemon on a SQLite file, restarted on the same file (virtual clock) ----------------


async def _daemon(tmp_path: Path, rules: Path, now: float, policies: str | None = None) -> Any:
    from engine.clock import VirtualClock
    from engine.daemon import Daemon
    from tests.daemon.helpers import make_config

    args = {} if policies is None else {"policies": policies}
    daemon = Daemon(make_config(tmp_path, rules, **args), VirtualClock(now), background=False)
    await daemon.start()
    await daemon.pump()
    return daemon


async def _post(daemon: Any, events: list[dict[str, Any]]) -> None:
    import aiohttp

    from tests.daemon.helpers import Client

    async with aiohttp.ClientSession() as session:
        for n in range(0, len(events), 50):
            status, body = await Client(daemon, session).post_events(events[n : n + 50])
            assert status == 202, body
    await daemon.pump()


async def _advance_to(daemon: Any, when: float) -> None:
    await daemon.pump()
    daemon.clock.advance_to(when)
    await daemon.pump()


def _messages(db: Path, rule: str) -> list[tuple[str, str, str | None]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT user_id, status, reason FROM messages WHERE rule_id = ? "
            "ORDER BY user_id, created_at",
            (rule,),
        ).fetchall()


def _rules_dir(tmp_path: Path, *files: str) -> Path:
    root = write_rules(tmp_path, TEMPLATE, *files)
    assert not load_ruleset([root]).problems
    return root


ONE_OFF_SOON = """\
rule: xmas
trigger: {schedule: {at: "2026-11-23T11:00:00Z"}}
steps:
  - send: {template: t, cascade: [email]}
"""
T0 = parse_time("2026-11-23T10:00:00Z")
AT = parse_time("2026-11-23T11:00:00Z")


async def test_a_one_off_fires_once_across_daemon_restarts(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, ONE_OFF_SOON)
    db = tmp_path / "kaskad.db"
    daemon = await _daemon(tmp_path, rules, T0)
    await _post(daemon, [{"type": "profile.updated", "user_id": "u1", "data": {"email": "a@x"}}])
    await daemon.stop()
    daemon = await _daemon(tmp_path, rules, T0 + 1800)  # restarted before the instant
    await _advance_to(daemon, AT)
    assert [m[0] for m in _messages(db, "xmas")] == ["u1"]
    await daemon.stop()
    for later in (AT, AT + 60, AT + 86400):  # restarted at and after the instant
        daemon = await _daemon(tmp_path, rules, later)
        await _advance_to(daemon, later + 7 * 86400)
        await daemon.stop()
    assert [m[0] for m in _messages(db, "xmas")] == ["u1"]


async def test_a_one_off_past_when_loaded_never_fires(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, ONE_OFF_SOON)
    db = tmp_path / "kaskad.db"
    for start in (AT + 1, AT + 86400):
        daemon = await _daemon(tmp_path, rules, start)
        await _post(daemon, [{"type": "profile.updated", "user_id": "u1", "data": {"email": "a"}}])
        await _advance_to(daemon, start + 86400)
        await daemon.stop()
    assert _messages(db, "xmas") == []


async def test_a_one_off_missed_while_down_fires_late_within_the_grace_only(
    tmp_path: Path,
) -> None:
    for back, fired in ((AT + 1800, 1), (AT + 7200, 0)):
        here = tmp_path / str(back)
        here.mkdir()
        rules = _rules_dir(here, ONE_OFF_SOON)
        daemon = await _daemon(here, rules, T0)  # planned, then down over the instant
        await _post(daemon, [{"type": "profile.updated", "user_id": "u1", "data": {"email": "a"}}])
        await daemon.stop()
        daemon = await _daemon(here, rules, back)
        await _advance_to(daemon, back + 86400)
        await daemon.stop()
        assert len(_messages(here / "kaskad.db", "xmas")) == fired, back


async def test_the_holdout_of_a_running_instance_survives_restarts_and_rule_edits(
    tmp_path: Path,
) -> None:
    rule = HOLDOUT.replace("goal: {event: order.created}\n", "")
    rules = _rules_dir(tmp_path, rule)
    db = tmp_path / "kaskad.db"
    people = [f"u{i:02d}" for i in range(60)]
    daemon = await _daemon(tmp_path, rules, T0)
    await _post(
        daemon,
        [
            *(
                {"type": "profile.updated", "user_id": u, "data": {"email": f"{u}@x"}}
                for u in people
            ),
            *({"type": "search.performed", "user_id": u, "data": {"query": "x"}} for u in people),
        ],
    )
    await daemon.stop()
    # the rule is edited (a new version, the holdout raised) while the instances wait
    (rules / "f0.yaml").write_text(rule.replace("holdout: 20%", "holdout: 30%"))
    daemon = await _daemon(tmp_path, rules, T0 + 3600)
    await _advance_to(daemon, T0 + 2 * 86400)
    await daemon.stop()
    rows = _messages(db, "promo")
    by_user: dict[str, list[str | None]] = {}
    for user, _, reason in rows:
        by_user.setdefault(user, []).append(reason)
    assert len(by_user) == 60
    held = {u for u, reasons in by_user.items() if reasons == ["held_out", "held_out"]}
    sent = {u for u, reasons in by_user.items() if reasons == [None, None]}
    assert held | sent == set(people) and 4 < len(held) < 25
    # the same users as simulate holds out: a hash of rule and user, not of the process
    from engine.lang.config import parse_config
    from engine.lang.events import parse_event
    from engine.simulate import Simulation, record_json

    events = [profile(u, "2026-11-01T08:00:00Z", email=f"{u}@x") for u in people]
    events += [search(u) for u in people]
    sim = await Simulation.create(load_ruleset([rules]), parse_config(QUIET_CONFIG))
    try:
        records = [
            record_json(r) for r in await sim.run([parse_event(e, received_at=0.0) for e in events])
        ]
    finally:
        await sim.close()
    # 30% now: everyone held out at 20% still is
    assert {r["user_id"] for r in records if r["reason"] == "held_out"} >= held


async def test_a_group_holds_across_a_rule_reload(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path, GROUP_HIGH, GROUP_LOW)
    db = tmp_path / "kaskad.db"
    daemon = await _daemon(tmp_path, rules, T0)
    cart = {"items": [{"product_id": "p1"}], "total": 1}
    await _post(
        daemon,
        [
            {"type": "profile.updated", "user_id": "u1", "data": {"email": "a@x"}},
            {"type": "cart.updated", "user_id": "u1", "data": cart},
        ],
    )
    # the running instance's rule is edited: its old version still holds the group
    (rules / "f0.yaml").write_text(textwrap.dedent(GROUP_HIGH).replace("wait: 1h", "wait: 2h"))
    await daemon.rules.load()
    await _post(daemon, [{"type": "search.performed", "user_id": "u1", "data": {"query": "x"}}])
    await _advance_to(daemon, T0 + 3 * 3600)
    await daemon.stop()
    assert _messages(db, "low") == [("u1", "skipped", "group_busy")]
    assert _messages(db, "high") == [("u1", "sent", None)]


async def test_a_segment_deleted_on_reload_names_its_rules_and_the_rest_run(
    tmp_path: Path,
) -> None:
    segment = "segment: baby\nany: [{event: search.performed, within: 1d}]\n"
    uses = (
        "rule: uses\ntrigger: {event: segment.entered, if: \"event.data.segment == 'baby'\"}\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    other = (
        "rule: other\ntrigger: {event: search.performed}\n"
        "steps: [{send: {template: t, cascade: [email]}}]\n"
    )
    rules = _rules_dir(tmp_path, segment, uses, other)
    daemon = await _daemon(tmp_path, rules, T0)
    (rules / "f0.yaml").unlink()
    current = await daemon.rules.load()
    assert [p.message for p in current.problems] == [
        "unknown segment 'baby': no segment file defines it; rule 'uses' reads it"
    ]
    await _post(
        daemon,
        [
            {"type": "profile.updated", "user_id": "u1", "data": {"email": "a@x"}},
            {"type": "search.performed", "user_id": "u1", "data": {"query": "x"}},
        ],
    )
    await daemon.stop()
    assert _messages(tmp_path / "kaskad.db", "other") == [("u1", "sent", None)]
    assert _messages(tmp_path / "kaskad.db", "uses") == []  # nothing enters a deleted segment


def test_the_goal_ends_a_held_out_instance_as_any_other(load: Load) -> None:
    events = [*users(200), *(search(f"u{i:03d}") for i in range(200))]
    records = run_simulation(load(HOLDOUT), events)
    held = sorted({r["user_id"] for r in records if r["reason"] == "held_out"})
    order = {"order_id": "o1", "total": 10, "items": []}
    orders = [ev("order.created", u, "2026-11-02T12:00:00Z", order) for u in held]
    again = run_simulation(load(HOLDOUT), events + orders)
    # the order (the goal) ends them before the second step: one held_out skip each
    assert sorted(r["user_id"] for r in again if r["reason"] == "held_out") == held
    assert all(r["step"] == "0" for r in again if r["reason"] == "held_out")
