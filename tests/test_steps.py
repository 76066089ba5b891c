"""Chain semantics beyond the seeds (SPEC 4, 5): small rules run on the virtual clock."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.clock import parse_time
from engine.core.model import UserState
from engine.core.policies import Policies
from engine.core.workspace import Workspace
from engine.lang.config import parse_config
from engine.lang.events import parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.simulate import Simulation, record_json
from tests.helpers import QUIET_CONFIG, brief, ev, profile, run_simulation

TEMPLATES = {
    "note": """\
        template: note
        email: {subject: Hi, text: "Hello {{ user.user_id }}"}
        sms: {text: Hello}
        mobile_push: {body: Hello}
        """,
    "coupon": """\
        template: coupon
        email: {subject: "Your code", text: "Code {{ trigger.data.coupon }}"}
        sms: {text: "Code {{ trigger.data.coupon | default('WELCOME') }}"}
        """,
    "order_thanks": """\
        template: order_thanks
        email: {subject: "Order {{ event.data.order_id }}", text: "Thanks"}
        """,
}

T0 = "2026-11-23T09:00:00Z"
U1 = profile("u1", T0, email="u1@shop.test", phone="+15550001111")
Load = Callable[[str], RuleSet]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """A rules directory with the test templates and one rule."""
    root = tmp_path / "rules"
    (root / "templates").mkdir(parents=True)
    for name, text in TEMPLATES.items():
        (root / "templates" / f"{name}.yaml").write_text(textwrap.dedent(text))

    def go(rule: str) -> RuleSet:
        (root / "r.yaml").write_text(textwrap.dedent(rule))
        ruleset = load_ruleset([root])
        assert not ruleset.problems, [str(p) for p in ruleset.problems]
        return ruleset

    return go


def search(time: str, user: str = "u1", query: str = "kettle") -> dict[str, Any]:
    return ev("search.performed", user, time, {"query": query})


def sent(time: str, step: str, channel: str = "email") -> tuple[Any, ...]:
    return (time, "r", "u1", step, channel, "sent", None)


def skipped(time: str, step: str, channel: str, reason: str) -> tuple[Any, ...]:
    return (time, "r", "u1", step, channel, "skipped", reason)


def simulate_with_sandbox(
    ruleset: RuleSet, events: list[dict[str, Any]], config: str = QUIET_CONFIG
) -> tuple[list[dict[str, Any]], Simulation]:
    """As conftest.run_simulation, but also hands back the simulation to inspect."""

    async def go() -> tuple[list[dict[str, Any]], Simulation]:
        sim = await Simulation.create(ruleset, parse_config(config))
        try:
            records = await sim.run([parse_event(e, received_at=0.0) for e in events])
            return [record_json(r) for r in records], sim
        finally:
            await sim.close()

    return asyncio.run(go())


# -- wait_for ------------------------------------------------------------------------------

WAIT_FOR = """\
    rule: r
    trigger: {event: favorite.added}
    steps:
      - wait_for:
          event: favorite.removed
          if: event.data.product_id == trigger.data.product_id
          timeout: 1d
        on_event:
          - send: {template: note, cascade: [email]}
        on_timeout:
          - send: {template: note, cascade: [sms]}
      - send: {template: note, cascade: [email]}
    """
FAVED = ev("favorite.added", "u1", "2026-11-23T10:00:00Z", {"product_id": "p1"})


def unfaved(time: str, product: str = "p1") -> dict[str, Any]:
    return ev("favorite.removed", "u1", time, {"product_id": product})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            [unfaved("2026-11-23T20:00:00Z")],
            [sent("2026-11-23T20:00:00Z", "0.on_event.0"), sent("2026-11-23T20:00:00Z", "1")],
            id="event-in-time",
        ),
        pytest.param(
            [],
            [
                sent("2026-11-24T10:00:00Z", "0.on_timeout.0", "sms"),
                sent("2026-11-24T10:00:00Z", "1"),
            ],
            id="timeout",
        ),
        pytest.param(
            [unfaved("2026-11-23T20:00:00Z", product="p2")],
            [
                sent("2026-11-24T10:00:00Z", "0.on_timeout.0", "sms"),
                sent("2026-11-24T10:00:00Z", "1"),
            ],
            id="if-does-not-correlate",
        ),
        pytest.param(
            [unfaved("2026-11-24T10:00:01Z")],
            [
                sent("2026-11-24T10:00:00Z", "0.on_timeout.0", "sms"),
                sent("2026-11-24T10:00:00Z", "1"),
            ],
            id="one-second-too-late",
        ),
        pytest.param(
            [unfaved("2026-11-24T10:00:00Z")],
            [sent("2026-11-24T10:00:00Z", "0.on_event.0"), sent("2026-11-24T10:00:00Z", "1")],
            id="at-the-timeout-instant-the-event-goes-first",
        ),
    ],
)
def test_wait_for(load: Load, extra: list[dict[str, Any]], expected: list[tuple[Any, ...]]) -> None:
    records = run_simulation(load(WAIT_FOR), [U1, FAVED, *extra])
    assert brief(records) == expected


ON_EVENT_IF = """\
    rule: r
    trigger: {event: search.performed}
    steps:
      - wait_for: {event: order.created, timeout: 1d}
        on_event:
          - if: event.data.total > 10
            then:
              - send: {template: note, cascade: [email]}
            else:
              - send: {template: note, cascade: [sms]}
    """


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (50, [sent("2026-11-23T11:00:00Z", "0.on_event.0.then.0")]),
        (5, [sent("2026-11-23T11:00:00Z", "0.on_event.0.else.0", "sms")]),
    ],
)
def test_an_if_after_wait_for_sees_the_event_that_came(
    load: Load, total: int, expected: list[tuple[Any, ...]]
) -> None:
    order = ev("order.created", "u1", "2026-11-23T11:00:00Z", {"order_id": "o9", "total": total})
    records = run_simulation(load(ON_EVENT_IF), [U1, search("2026-11-23T10:00:00Z"), order])
    assert brief(records) == expected


def test_a_template_after_wait_for_sees_the_event_that_came(load: Load) -> None:
    rule = ON_EVENT_IF.replace(
        "template: note, cascade: [email]", "template: order_thanks, cascade: [email]"
    )
    order = ev("order.created", "u1", "2026-11-23T11:00:00Z", {"order_id": "o9", "total": 50})
    records, sim = simulate_with_sandbox(load(rule), [U1, search("2026-11-23T10:00:00Z"), order])
    assert brief(records) == [sent("2026-11-23T11:00:00Z", "0.on_event.0.then.0")]
    assert sim.sandbox["email"].sent[0].payload["subject"] == "Order o9"


def test_exit_on_ends_a_wait_for(load: Load) -> None:
    rule = WAIT_FOR.replace("steps:", "exit_on:\n      - event: cart.cleared\n    steps:")
    cleared = ev("cart.cleared", "u1", "2026-11-23T12:00:00Z")
    assert run_simulation(load(rule), [U1, FAVED, cleared]) == []


# -- if / then / else, stop, step paths ----------------------------------------------------

BRANCHES = """\
    rule: r
    trigger: {event: order.created}
    steps:
      - wait: 1h
      - send: {template: note, cascade: [email]}
      - if: trigger.data.total > 100
        then:
          - send: {template: note, cascade: [email]}
          - stop: true
        else:
          - wait: 1h
          - send: {template: note, cascade: [sms]}
      - wait_for: {event: review.posted, timeout: 2d}
        on_timeout:
          - send: {template: note, cascade: [sms]}
      - send: {template: note, cascade: [email]}
    """


def order(total: int, time: str = "2026-11-23T10:00:00Z") -> dict[str, Any]:
    return ev("order.created", "u1", time, {"order_id": "o1", "total": total})


def test_then_branch_and_stop(load: Load) -> None:
    records = run_simulation(load(BRANCHES), [U1, order(500)])
    assert brief(records) == [
        sent("2026-11-23T11:00:00Z", "1"),
        sent("2026-11-23T11:00:00Z", "2.then.0"),
    ]


def test_else_branch_then_on_timeout(load: Load) -> None:
    records = run_simulation(load(BRANCHES), [U1, order(50)])
    assert brief(records) == [
        sent("2026-11-23T11:00:00Z", "1"),
        sent("2026-11-23T12:00:00Z", "2.else.1", "sms"),
        sent("2026-11-25T12:00:00Z", "3.on_timeout.0", "sms"),
        sent("2026-11-25T12:00:00Z", "4"),
    ]


def test_else_branch_then_the_awaited_event_skips_on_timeout(load: Load) -> None:
    review = ev("review.posted", "u1", "2026-11-24T10:00:00Z", {"stars": 5})
    records = run_simulation(load(BRANCHES), [U1, order(50), review])
    assert brief(records) == [
        sent("2026-11-23T11:00:00Z", "1"),
        sent("2026-11-23T12:00:00Z", "2.else.1", "sms"),
        sent("2026-11-24T10:00:00Z", "4"),
    ]


def test_an_if_that_cannot_be_evaluated_takes_the_else_branch(load: Load) -> None:
    rule = BRANCHES.replace("trigger.data.total > 100", "trigger.data.discount > 100")
    records = run_simulation(load(rule), [U1, order(500)])
    assert brief(records)[:2] == [
        sent("2026-11-23T11:00:00Z", "1"),
        sent("2026-11-23T12:00:00Z", "2.else.1", "sms"),
    ]


# -- modes, cooldown, audience -------------------------------------------------------------


def two_hour_chain(mode: str, extra: str = "") -> str:
    return f"""\
rule: r
trigger: {{event: search.performed}}
mode: {mode}
{extra}
steps:
  - wait: 2h
  - send: {{template: note, cascade: [email]}}
"""


@pytest.mark.parametrize(
    ("mode", "times"),
    [
        ("single", ["2026-11-23T12:00:00Z"]),  # the second trigger is ignored while running
        ("parallel", ["2026-11-23T12:00:00Z", "2026-11-23T13:00:00Z"]),  # two instances
        ("restart", ["2026-11-23T13:00:00Z"]),  # the first instance is replaced
    ],
)
def test_mode(load: Load, mode: str, times: list[str]) -> None:
    events = [U1, search("2026-11-23T10:00:00Z"), search("2026-11-23T11:00:00Z")]
    records = run_simulation(load(two_hour_chain(mode)), events)
    assert brief(records) == [sent(t, "1") for t in times]


def test_single_mode_starts_again_once_the_chain_ended(load: Load) -> None:
    events = [U1, search("2026-11-23T10:00:00Z"), search("2026-11-23T12:00:01Z")]
    records = run_simulation(load(two_hour_chain("single")), events)
    assert [r["time"] for r in records] == ["2026-11-23T12:00:00Z", "2026-11-23T14:00:01Z"]


def test_instances_are_per_user(load: Load) -> None:
    events = [
        U1,
        profile("u2", T0, email="u2@shop.test"),
        search("2026-11-23T10:00:00Z"),
        search("2026-11-23T11:00:00Z", user="u2"),
    ]
    records = run_simulation(load(two_hour_chain("single")), events)
    assert [(r["user_id"], r["time"]) for r in records] == [
        ("u1", "2026-11-23T12:00:00Z"),
        ("u2", "2026-11-23T13:00:00Z"),
    ]


def test_cooldown_blocks_a_new_start_after_the_chain_ended(load: Load) -> None:
    events = [
        U1,
        search("2026-11-23T10:00:00Z"),
        search("2026-11-23T13:00:00Z"),  # the chain ended at 12:00, cooldown runs to 10:00
        search("2026-11-24T09:59:59Z"),
        search("2026-11-24T10:00:00Z"),  # exactly a day after the last start
    ]
    records = run_simulation(load(two_hour_chain("single", "cooldown: 1d")), events)
    assert [r["time"] for r in records] == ["2026-11-23T12:00:00Z", "2026-11-24T12:00:00Z"]


def test_cooldown_is_per_key(load: Load) -> None:
    rule = two_hour_chain("single", "cooldown: 1d\nkey: '{{ event.data.query }}'")
    events = [
        U1,
        search("2026-11-23T10:00:00Z", query="kettle"),
        search("2026-11-23T13:00:00Z", query="kettle"),
        search("2026-11-23T13:00:00Z", query="lamp"),
    ]
    records = run_simulation(load(rule), events)
    assert [r["time"] for r in records] == ["2026-11-23T12:00:00Z", "2026-11-23T15:00:00Z"]


def test_cooldown_applies_to_parallel_mode(load: Load) -> None:
    events = [U1, search("2026-11-23T10:00:00Z"), search("2026-11-23T11:00:00Z")]
    records = run_simulation(load(two_hour_chain("parallel", "cooldown: 1d")), events)
    assert [r["time"] for r in records] == ["2026-11-23T12:00:00Z"]


def test_audience_false_starts_no_instance(load: Load) -> None:
    rule = two_hour_chain("single", "audience: user.orders_count > 0")
    events = [
        U1,
        search("2026-11-23T10:00:00Z"),  # no order yet: not in the audience
        order(30, "2026-11-23T12:30:00Z"),
        search("2026-11-23T13:00:00Z"),
    ]
    records = run_simulation(load(rule), events)
    assert brief(records) == [sent("2026-11-23T15:00:00Z", "1")]


def test_trigger_if_false_starts_no_instance(load: Load) -> None:
    rule = two_hour_chain("single").replace(
        "{event: search.performed}", "{event: search.performed, if: \"event.data.query != ''\"}"
    )
    events = [U1, search("2026-11-23T10:00:00Z", query=""), search("2026-11-23T11:00:00Z")]
    assert brief(run_simulation(load(rule), events)) == [sent("2026-11-23T13:00:00Z", "1")]


# -- waits in time -------------------------------------------------------------------------

WAIT_AT = """\
    rule: r
    trigger: {event: search.performed}
    steps:
      - wait: {for: 1d, at: "10:00"}
      - send: {template: note, cascade: [email]}
    """


@pytest.mark.parametrize(
    ("timezone", "trigger_at", "expected"),
    [
        # 15:00 Moscow + 1 day is past 10:00: the next morning after that, 10:00 MSK = 07:00Z.
        ("Europe/Moscow", "2026-11-23T12:00:00Z", "2026-11-25T07:00:00Z"),
        # 08:00 Moscow + 1 day is before 10:00: the same day, 10:00 MSK.
        ("Europe/Moscow", "2026-11-23T05:00:00Z", "2026-11-24T07:00:00Z"),
        ("America/New_York", "2026-11-23T12:00:00Z", "2026-11-24T15:00:00Z"),
        ("UTC", "2026-11-23T10:00:00Z", "2026-11-24T10:00:00Z"),  # exactly 10:00
        # Berlin leaves summer time on 2026-10-25: 10:00 CET is 09:00Z.
        ("Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-26T09:00:00Z"),
    ],
)
def test_wait_for_then_at_a_local_time(
    load: Load, timezone: str, trigger_at: str, expected: str
) -> None:
    events = [
        profile("u1", "2026-10-01T00:00:00Z", email="u1@shop.test", timezone=timezone),
        search(trigger_at),
    ]
    assert brief(run_simulation(load(WAIT_AT), events)) == [sent(expected, "1")]


def test_wait_at_uses_the_policy_timezone_without_a_profile_one(load: Load) -> None:
    config = QUIET_CONFIG + "  timezone: Asia/Tokyo\n"
    events = [ev("profile.updated", "u1", T0, {"email": "u1@shop.test"}), search(T0)]
    # 18:00 Tokyo + 1 day -> the next 10:00 Tokyo is 2026-11-25 01:00Z.
    records = run_simulation(load(WAIT_AT), events, config)
    assert brief(records) == [sent("2026-11-25T01:00:00Z", "1")]


WAIT_UNTIL = """\
    rule: r
    trigger: {event: points.accrued}
    steps:
      - wait: {until: "{{ trigger.data.expires_at }}", offset: -7d}
      - send: {template: note, cascade: [email]}
      - wait: {until: "{{ trigger.data.expires_at }}"}
      - send: {template: note, cascade: [email]}
    """


def accrued(expires_at: str) -> dict[str, Any]:
    return ev("points.accrued", "u1", "2026-11-23T10:00:00Z", {"expires_at": expires_at})


def test_wait_until_with_an_offset(load: Load) -> None:
    records = run_simulation(load(WAIT_UNTIL), [U1, accrued("2026-12-31T12:00:00Z")])
    assert brief(records) == [
        sent("2026-12-24T12:00:00Z", "1"),
        sent("2026-12-31T12:00:00Z", "3"),
    ]


def test_wait_until_a_past_moment_goes_on_at_once(load: Load) -> None:
    records = run_simulation(load(WAIT_UNTIL), [U1, accrued("2026-11-25T12:00:00Z")])
    assert brief(records) == [
        sent("2026-11-23T10:00:00Z", "1"),
        sent("2026-11-25T12:00:00Z", "3"),
    ]


def test_wait_until_a_missing_field_stops_the_instance(load: Load) -> None:
    events = [U1, ev("points.accrued", "u1", "2026-11-23T10:00:00Z", {"amount": 5})]
    assert brief(run_simulation(load(WAIT_UNTIL), events)) == [
        ("2026-11-23T10:00:00Z", "r", "u1", "0", None, "error", "expression_error")
    ]


def test_wait_until_a_time_that_is_not_iso_stops_the_instance_visibly(load: Load) -> None:
    """Bad data ends the instance as `error`: a simulate line, a log line naming the rule,
    user, event, step and value, and a metric (tests/daemon/test_instance_errors.py)."""
    events = [U1, accrued("01.04.2027")]
    assert brief(run_simulation(load(WAIT_UNTIL), events)) == [
        ("2026-11-23T10:00:00Z", "r", "u1", "0", None, "error", "invalid_time")
    ]


# -- goals and the order of events and timers ----------------------------------------------

GOAL = """\
    rule: r
    trigger: {event: search.performed}
    goal:
      event: order.created
      if: event.data.query == trigger.data.query
    steps:
      - wait: 1h
      - send: {template: note, cascade: [email]}
    """


def order_for(query: str, time: str) -> dict[str, Any]:
    return ev("order.created", "u1", time, {"order_id": "o1", "total": 5, "query": query})


@pytest.mark.parametrize(
    ("goal_event", "expected"),
    [
        pytest.param(order_for("kettle", "2026-11-23T10:30:00Z"), [], id="goal-met"),
        pytest.param(
            order_for("kettle", "2026-11-23T11:00:00Z"), [], id="order-at-the-due-instant-first"
        ),
        pytest.param(
            order_for("kettle", "2026-11-23T11:00:01Z"),
            [sent("2026-11-23T11:00:00Z", "1")],
            id="order-after-the-send",
        ),
        pytest.param(
            order_for("lamp", "2026-11-23T10:30:00Z"),
            [sent("2026-11-23T11:00:00Z", "1")],
            id="goal-if-does-not-correlate",
        ),
    ],
)
def test_goal_with_if(
    load: Load, goal_event: dict[str, Any], expected: list[tuple[Any, ...]]
) -> None:
    records = run_simulation(load(GOAL), [U1, search("2026-11-23T10:00:00Z"), goal_event])
    assert brief(records) == expected


def test_events_listed_out_of_order_are_handled_in_time_order(load: Load) -> None:
    events = [order_for("kettle", "2026-11-23T11:00:00Z"), search("2026-11-23T10:00:00Z"), U1]
    assert run_simulation(load(GOAL), events) == []


# -- templates, consent, categories --------------------------------------------------------

COUPON = """\
    rule: r
    trigger: {event: search.performed}
    steps:
      - send: {template: coupon, cascade: [email, sms]}
    """


def test_a_template_error_moves_the_cascade_on_and_sends_nothing_half_rendered(
    load: Load,
) -> None:
    records, sim = simulate_with_sandbox(load(COUPON), [U1, search("2026-11-23T10:00:00Z")])
    assert brief(records) == [sent("2026-11-23T10:00:00Z", "0", "sms")]
    assert sim.sandbox["email"].sent == []
    assert [m.payload for m in sim.sandbox["sms"].sent] == [
        {"text": "Code WELCOME", "segments": 1, "encoding": "GSM-7"}
    ]
    messages = sim.ws.users["u1"].messages
    assert [(m.channel, m.status) for m in messages] == [("sms", "sent")]
    assert any("coupon" in str(f) and "email.text" in str(f) for f in sim.failures)


def test_a_template_error_on_the_last_channel_is_a_template_error_skip(load: Load) -> None:
    rule = COUPON.replace("[email, sms]", "[email]")
    records, sim = simulate_with_sandbox(load(rule), [U1, search("2026-11-23T10:00:00Z")])
    assert brief(records) == [skipped("2026-11-23T10:00:00Z", "0", "email", "template_error")]
    assert records[0]["template"] == "coupon"
    assert sim.sandbox["email"].sent == []
    assert [m.payload for m in sim.ws.users["u1"].messages] == [None]


def test_with_the_variable_present_the_template_renders(load: Load) -> None:
    event = ev("search.performed", "u1", "2026-11-23T10:00:00Z", {"coupon": "C-1"})
    records, sim = simulate_with_sandbox(load(COUPON), [U1, event])
    assert brief(records) == [sent("2026-11-23T10:00:00Z", "0")]
    assert sim.sandbox["email"].sent[0].payload == {"subject": "Your code", "text": "Code C-1"}


SEND_EMAIL_SMS = """\
    rule: r
    trigger: {event: search.performed}
    category: CATEGORY
    steps:
      - send: {template: note, cascade: CASCADE}
    """


def send_rule(cascade: str = "[email, sms]", category: str = "marketing") -> str:
    return SEND_EMAIL_SMS.replace("CASCADE", cascade).replace("CATEGORY", category)


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        ({"email": False}, [sent("2026-11-23T10:00:00Z", "0", "sms")]),
        (
            {"email": False, "sms": False},
            [skipped("2026-11-23T10:00:00Z", "0", "sms", "no_consent")],
        ),
        ({"email": True, "sms": False}, [sent("2026-11-23T10:00:00Z", "0")]),
    ],
)
def test_consent_false_is_no_consent(
    load: Load, consent: dict[str, bool], expected: list[tuple[Any, ...]]
) -> None:
    events = [
        profile("u1", T0, email="u1@shop.test", phone="+15550001111", consent=consent),
        search("2026-11-23T10:00:00Z"),
    ]
    assert brief(run_simulation(load(send_rule()), events)) == expected


OPT_IN_SMS = QUIET_CONFIG + "  consent_default: {sms: opt_in}\n"


@pytest.mark.parametrize(
    ("cascade", "consent", "expected"),
    [
        ("[sms]", {}, [skipped("2026-11-23T10:00:00Z", "0", "sms", "no_consent")]),
        ("[sms]", {"sms": True}, [sent("2026-11-23T10:00:00Z", "0", "sms")]),
        ("[sms]", {"sms": False}, [skipped("2026-11-23T10:00:00Z", "0", "sms", "no_consent")]),
        ("[email]", {}, [sent("2026-11-23T10:00:00Z", "0")]),  # email stays opt-out
        ("[sms, email]", {}, [sent("2026-11-23T10:00:00Z", "0")]),
    ],
)
def test_consent_default_opt_in(
    load: Load, cascade: str, consent: dict[str, bool], expected: list[tuple[Any, ...]]
) -> None:
    events = [
        profile("u1", T0, email="u1@shop.test", phone="+15550001111", consent=consent),
        search("2026-11-23T10:00:00Z"),
    ]
    assert brief(run_simulation(load(send_rule(cascade)), events, OPT_IN_SMS)) == expected


STRICT_POLICIES = """
policies:
  quiet_hours: {from: "21:00", to: "09:00"}
  frequency_caps: [{per: 1d, max: 0}]
  consent_default: {sms: opt_in}
"""


@pytest.mark.parametrize(
    ("category", "consent", "expected"),
    [
        ("transactional", {"sms": False}, [sent("2026-11-23T23:00:00Z", "0", "sms")]),
        ("transactional", {}, [sent("2026-11-23T23:00:00Z", "0", "sms")]),
        (
            "marketing",
            {"sms": False},
            [skipped("2026-11-23T23:00:00Z", "0", "sms", "no_consent")],
        ),
        (
            "marketing",
            {"sms": True},  # consent given: deferred past the quiet hours, then capped
            [skipped("2026-11-24T09:00:00Z", "0", "sms", "frequency_cap")],
        ),
    ],
)
def test_transactional_ignores_consent_quiet_hours_and_caps(
    load: Load, category: str, consent: dict[str, bool], expected: list[tuple[Any, ...]]
) -> None:
    events = [
        profile("u1", T0, phone="+15550001111", consent=consent),
        search("2026-11-23T23:00:00Z"),  # night in UTC
    ]
    records = run_simulation(load(send_rule("[sms]", category)), events, STRICT_POLICIES)
    assert brief(records) == expected


def test_quiet_hours_defer_marketing_to_their_end(load: Load) -> None:
    config = "policies: {frequency_caps: [], quiet_hours: {from: '21:00', to: '09:00'}}"
    events = [U1, search("2026-11-23T23:00:00Z")]
    records = run_simulation(load(send_rule("[sms]")), events, config)
    assert brief(records) == [
        ("2026-11-24T09:00:00Z", "r", "u1", "0", "sms", "sent", "quiet_hours_deferred")
    ]


# -- awaited reactions ---------------------------------------------------------------------

AWAIT_OPENED = """\
    rule: r
    trigger: {event: search.performed}
    steps:
      - send:
          template: note
          cascade:
            - {channel: email, await: opened, within: 1h}
            - sms
    """
FALLBACK = [sent("2026-11-23T10:00:00Z", "0"), sent("2026-11-23T11:00:00Z", "0", "sms")]
EMAIL_ONLY = [sent("2026-11-23T10:00:00Z", "0")]


def reaction(etype: str, time: str = "2026-11-23T10:30:00Z", **data: str) -> dict[str, Any]:
    return ev(etype, "u1", time, data or {"rule": "r", "channel": "email"})


@pytest.mark.parametrize(
    ("reactions", "expected"),
    [
        pytest.param([], FALLBACK, id="no-reaction"),
        pytest.param([reaction("message.opened")], EMAIL_ONLY, id="opened"),
        pytest.param([reaction("message.clicked")], EMAIL_ONLY, id="clicked-implies-opened"),
        pytest.param([reaction("message.delivered")], FALLBACK, id="delivered-is-not-enough"),
        pytest.param(
            [reaction("message.opened", "2026-11-23T11:00:00Z")],
            EMAIL_ONLY,
            id="opened-at-the-deadline-goes-first",
        ),
        pytest.param(
            [reaction("message.opened", "2026-11-23T11:00:01Z")], FALLBACK, id="opened-too-late"
        ),
        pytest.param(
            [reaction("message.opened", message_id="m000000002")],
            EMAIL_ONLY,
            id="opened-by-message-id",
        ),
        pytest.param(
            [
                reaction("message.opened", rule="other", channel="email"),
                reaction("message.opened", rule="r", channel="sms"),
                reaction("message.opened", message_id="nope"),
            ],
            FALLBACK,
            id="unknown-rule-channel-or-id-ignored",
        ),
    ],
)
def test_await_opened(
    load: Load, reactions: list[dict[str, Any]], expected: list[tuple[Any, ...]]
) -> None:
    events = [U1, search("2026-11-23T10:00:00Z"), *reactions]
    assert brief(run_simulation(load(AWAIT_OPENED), events)) == expected


def test_a_reaction_for_an_unknown_message_is_ignored(load: Load) -> None:
    events = [
        U1,
        reaction("message.opened"),  # no message of rule r yet
        ev("message.clicked", "u9", "2026-11-23T10:30:00Z", {"rule": "zz", "channel": "sms"}),
    ]
    records, sim = simulate_with_sandbox(load(AWAIT_OPENED), events)
    assert records == []
    assert sim.ws.users["u1"].messages == []


@pytest.mark.parametrize(
    ("condition", "started"),
    [
        ("event.data.query == 'kettle'", True),  # reads data only: the light context
        ("event.time >= '2026-11-23T09:30:00Z'", True),  # reads the time: the full context
        ("trigger.time < '2026-11-23T09:30:00Z'", False),
        ("event.user_id == 'u1' and user.email is not none", True),  # the user too
        ("event | length == 5", True),  # the whole object: every field is there
        ("event.data.missing > 1", False),  # an error: false, and the rule keeps loading
    ],
)
def test_trigger_conditions_see_the_whole_event(load: Load, condition: str, started: bool) -> None:
    rules = load(
        f"""\
        rule: r
        trigger: {{event: search.performed, if: "{condition}"}}
        steps:
          - send: {{template: note, cascade: [email]}}
        """
    )
    records = run_simulation(rules, [U1, search("2026-11-23T10:00:00Z")], config=QUIET_CONFIG)
    assert [r["status"] for r in records] == (["sent"] if started else [])


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ("user.attributes.tier == 'gold'", ["a"]),
        ("user.rfm in ['loyal'] or user.attributes.tier == 'silver'", ["b", "c"]),
        ("user.attributes.score > 5", ["a"]),  # b and c: an error (no score), so false
        ("user.orders_count == 0 and now.year > 2000", ["a", "b", "c"]),  # not prefiltered
    ],
)
def test_a_broadcast_starts_exactly_its_audience(
    load: Load, audience: str, expected: list[str]
) -> None:
    rules = load(
        f"""\
        rule: r
        trigger: {{schedule: "0 11 * * TUE"}}
        audience: "{audience}"
        steps:
          - send: {{template: note, cascade: [email]}}
        """
    )
    users = [
        profile("a", T0, email="a@shop.test", attributes={"tier": "gold", "score": 9}),
        profile("b", T0, email="b@shop.test", rfm="loyal"),
        profile("c", T0, email="c@shop.test", attributes={"tier": "silver"}),
    ]
    records = run_simulation(rules, users, config=QUIET_CONFIG, until=1795600000.0)
    first = [r for r in records if r["time"] == "2026-11-24T11:00:00Z"]
    assert [r["user_id"] for r in first] == expected


# -- daylight saving: one instant for every wall-clock time ----------------------------------
# A time in the gap of a change moves forward by the gap; a time that happens twice is the
# first of the two (README, "Local times and daylight saving").

WAIT_AT_NIGHT = """\
    rule: r
    trigger: {event: search.performed}
    steps:
      - wait: {for: 12h, at: "AT"}
      - send: {template: note, cascade: [email]}
    """


@pytest.mark.parametrize(
    ("timezone", "at", "trigger_at", "expected"),
    [
        # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 is 03:30 CEST.
        ("Europe/Berlin", "02:30", "2026-03-28T12:00:00Z", "2026-03-29T01:30:00Z"),
        # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET. 02:30 is the first one...
        ("Europe/Berlin", "02:30", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z"),
        # ...so at 02:20 CET (the second pass) it is gone: tomorrow's, not one in the past
        ("Europe/Berlin", "02:30", "2026-10-24T13:20:00Z", "2026-10-26T01:30:00Z"),
        # New York, 2026-03-08 (02:00 EST -> 03:00 EDT) and 2026-11-01 (02:00 EDT -> 01:00 EST)
        ("America/New_York", "02:30", "2026-03-07T18:00:00Z", "2026-03-08T07:30:00Z"),
        ("America/New_York", "01:30", "2026-10-31T17:10:00Z", "2026-11-01T05:30:00Z"),
        ("America/New_York", "01:30", "2026-10-31T18:10:00Z", "2026-11-02T06:30:00Z"),
        ("America/New_York", "01:30", "2026-10-31T18:40:00Z", "2026-11-02T06:30:00Z"),
    ],
)
def test_wait_at_a_local_time_over_a_dst_change(
    load: Load, timezone: str, at: str, trigger_at: str, expected: str
) -> None:
    events = [
        profile("u1", "2026-03-01T00:00:00Z", email="u1@shop.test", timezone=timezone),
        search(trigger_at),
    ]
    rule = WAIT_AT_NIGHT.replace("AT", at)
    assert brief(run_simulation(load(rule), events)) == [sent(expected, "1")]


@pytest.mark.parametrize(
    ("quiet", "timezone", "at", "expected"),
    [
        # 02:20 CET, the second pass: the quiet hours ended at the first 02:30 (00:30Z)
        (("21:00", "02:30"), "Europe/Berlin", "2026-10-25T01:20:00Z", None),
        (("21:00", "02:30"), "Europe/Berlin", "2026-10-25T00:20:00Z", "2026-10-25T00:30:00Z"),
        # 01:45 CET on the night 02:30 does not exist: quiet until 03:30 CEST
        (("21:00", "02:30"), "Europe/Berlin", "2026-03-29T00:45:00Z", "2026-03-29T01:30:00Z"),
        # New York leaves summer time overnight: 09:00 EST
        (("21:00", "09:00"), "America/New_York", "2026-11-01T05:30:00Z", "2026-11-01T14:00:00Z"),
        (("21:00", "09:00"), "America/New_York", "2026-11-01T06:30:00Z", "2026-11-01T14:00:00Z"),
    ],
)
def test_quiet_hours_over_a_dst_change(
    load: Load, quiet: tuple[str, str], timezone: str, at: str, expected: str | None
) -> None:
    config = (
        f"policies: {{frequency_caps: [], quiet_hours: {{from: '{quiet[0]}', to: '{quiet[1]}'}}}}"
    )
    events = [
        profile("u1", "2026-03-01T00:00:00Z", phone="+15550001111", timezone=timezone),
        search(at),
    ]
    records = run_simulation(load(send_rule("[sms]")), events, config)
    if expected is None:
        assert brief(records) == [(at, "r", "u1", "0", "sms", "sent", None)]
    else:
        assert brief(records) == [(expected, "r", "u1", "0", "sms", "sent", "quiet_hours_deferred")]


@pytest.mark.parametrize(
    ("schedule", "timezone", "start", "expected"),
    [
        # once on the night clocks go back, at the first 02:30 (CEST)
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        ),
        # every hour: through both passes of the repeated one, as the hours they are
        (
            "15 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:50:00Z",
            [f"2026-10-25T{h:02d}:15:00Z" for h in range(0, 4)],
        ),
    ],
)
def test_a_schedule_runs_once_when_the_clocks_go_back(
    load: Load, schedule: str, timezone: str, start: str, expected: list[str]
) -> None:
    rules = load(
        f"""\
        rule: r
        category: transactional
        trigger: {{schedule: "{schedule}", timezone: {timezone}}}
        steps:
          - send: {{template: note, cascade: [email]}}
        """
    )
    users = [profile("u1", start, email="u1@shop.test")]
    until = parse_time(expected[-1]) + 60
    records = run_simulation(rules, users, config=QUIET_CONFIG, until=until)
    assert [r["time"] for r in records] == expected


@pytest.mark.parametrize(
    "stored",
    ["localtime", "Europe/" + "x" * 300, "../../etc/localtime", 3, {"zone": "UTC"}, ["UTC"]],
)
def test_a_profile_timezone_that_is_no_zone_is_passed_over_and_counted(stored: Any) -> None:
    """Intake refuses such a timezone, but a profile kept from before (when 'localtime'
    passed) or written otherwise may hold anything: the shop's zone then, and a count."""
    policies = Policies(parse_config("policies: {timezone: Asia/Tokyo}"))
    ws = Workspace(now=0.0)
    st = UserState("u1", {"user_id": "u1", "timezone": stored})
    assert policies.zone(st, ws).key == "Asia/Tokyo"
    assert policies.zone(UserState("u2", {"timezone": "Europe/Berlin"}), ws).key == (
        "Europe/Berlin"
    )
    assert policies.zone(UserState("u3", {"timezone": None}), ws).key == "Asia/Tokyo"
    assert ws.zones_ignored == 1
