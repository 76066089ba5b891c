"""The engine when the provider's answer comes later (the daemon's dispatcher): reactions
and instance ends that overtake a send in flight. Real engine, real rules, virtual time."""

from __future__ import annotations

from pathlib import Path

from channels.base import OutboundMessage, Outcome
from engine.clock import iso
from engine.core.model import UserState, new_profile
from engine.core.runner import Engine
from engine.core.workspace import IdGen, Workspace
from engine.lang.config import parse_config
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import load_ruleset
from tests.helpers import QUIET_CONFIG

RULE = """\
rule: promo
trigger: {event: cart.updated}
goal: {event: order.created}
steps:
  - send:
      template: promo
      cascade:
        - {channel: email, await: opened, within: 1h}
        - {channel: sms}
"""
TEMPLATE = """\
template: promo
email: {subject: Promo, text: "Hello"}
sms: {text: Hello}
"""
T0 = 1_795_000_000.0


def engine(tmp_path: Path) -> tuple[Engine, list[OutboundMessage]]:
    (tmp_path / "r.yaml").write_text(RULE)
    (tmp_path / "t.yaml").write_text(TEMPLATE)
    rules = load_ruleset([tmp_path])
    assert not rules.problems
    outbox: list[OutboundMessage] = []

    def later(message: OutboundMessage) -> None:
        outbox.append(message)  # the dispatcher answers later, through on_send_outcome

    return Engine(rules, parse_config(QUIET_CONFIG), later, ids=IdGen()), outbox


def event(etype: str, at: float, **data: object) -> Event:
    body = {"type": etype, "user_id": "u1", "time": iso(at), "data": data}
    return parse_event(body, received_at=at)


def user(ws: Workspace) -> UserState:
    st = UserState("u1", new_profile("u1", T0))
    st.profile.update(email="u1@shop.test", phone="+15550001111")
    ws.users["u1"] = st
    return st


def test_an_open_before_the_answer_ends_the_await(tmp_path: Path) -> None:
    eng, outbox = engine(tmp_path)
    ws = Workspace(now=T0)
    st = user(ws)
    eng.handle_event(ws, st, event("cart.updated", T0, total=10))
    assert [m.channel for m in outbox] == ["email"]
    (message,) = st.messages
    message.status = "sending"  # the dispatcher claimed it
    ws.now = T0 + 5
    opened = event("message.opened", T0 + 5, message_id=message.id)
    eng.handle_event(ws, st, opened)
    # the dispatcher's status stands; the open is kept by its time
    assert (message.status, message.opened_at) == ("sending", T0 + 5)
    ws.now = T0 + 6
    eng.on_send_outcome(ws, st, message.id, Outcome.accepted("pid-1"))
    assert (message.status, message.sent_at) == ("opened", T0 + 6)
    (inst,) = ws.changes.instances.values()  # ended: no longer among the running ones
    assert (inst.status, inst.due_at) == ("completed", None)  # no hour of waiting, no SMS
    assert not st.instances
    assert [m.channel for m in outbox] == ["email"]


def test_an_answer_after_the_goal_is_recorded_and_goes_no_further(tmp_path: Path) -> None:
    eng, outbox = engine(tmp_path)
    ws = Workspace(now=T0)
    st = user(ws)
    eng.handle_event(ws, st, event("cart.updated", T0, total=10))
    (message,) = st.messages
    message.status = "sending"
    ws.now = T0 + 5
    eng.handle_event(ws, st, event("order.created", T0 + 5, total=10))
    (inst,) = ws.changes.instances.values()
    assert (inst.status, inst.end_reason) == ("converted", "order.created")
    assert not st.instances
    ws.now = T0 + 6
    eng.on_send_outcome(ws, st, message.id, Outcome.accepted("pid-1"))
    assert (message.status, message.sent_at, message.provider_id) == ("sent", T0 + 6, "pid-1")
    assert [m.channel for m in outbox] == ["email"]  # the cascade did not go on to SMS


def test_a_reaction_is_dated_when_it_happened(tmp_path: Path) -> None:
    """As orders are (attribution compares the two): the event's time, but never in the
    future nor before the message existed."""
    eng, _outbox = engine(tmp_path)
    ws = Workspace(now=T0)
    st = user(ws)
    eng.handle_event(ws, st, event("cart.updated", T0, total=10))
    (message,) = st.messages
    ws.now = T0 + 50
    eng.handle_event(ws, st, event("message.delivered", T0 - 100, message_id=message.id))
    eng.handle_event(ws, st, event("message.opened", T0 + 30, message_id=message.id))
    eng.handle_event(ws, st, event("message.clicked", T0 + 900, message_id=message.id))
    assert (message.delivered_at, message.opened_at, message.clicked_at) == (T0, T0 + 30, T0 + 50)
