"""The chain runner: each instance is a durable state machine over its rule's program.

All methods are synchronous and work on a Workspace; the driver (the Processor) loads users
before and commits the workspace after, so one batch of events or timers is one
transaction. Steps run from a table of op handlers, as Home Assistant's script engine does;
what an instance waits on is a typed state (engine/core/waits.py).
"""

from __future__ import annotations

import secrets
from typing import Any

from channels.base import Outcome
from engine.core import journey
from engine.core.cascade import Cascade, Outbox
from engine.core.changes import UserEvent
from engine.core.context import context
from engine.core.facts import apply_facts
from engine.core.model import PROFILE_DEFAULTS, Instance, UserState
from engine.core.policies import Policies
from engine.core.reactions import record_reaction
from engine.core.segments import SegmentEngine
from engine.core.steps import Steps
from engine.core.tracking import Tracker
from engine.core.variants import cascade_of, in_share
from engine.core.waits import Awaiting, Deferred, Sending, Waiting, WaitingFor
from engine.core.workspace import IdGen, Workspace
from engine.errors import ExpressionError
from engine.lang.config import Config
from engine.lang.events import MESSAGE_EVENTS, Event
from engine.lang.fused import FusedTests, fuse_tests
from engine.lang.program import (
    REACTIONS_MEETING,
    SendOp,
    WaitForOp,
)
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet


class Engine(Steps):
    def __init__(
        self,
        rules: RuleSet,
        config: Config,
        outbox: Outbox,
        *,
        ids: IdGen | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.config = config
        self.ids = ids or IdGen()
        # Without tracking.secret, a key of this process only: nobody can forge its links,
        # and the engines that serve none (simulate) need no more. The daemon passes its own.
        self.tracker = tracker or Tracker(
            config.tracking.base_url, config.tracking.secret or secrets.token_hex(32)
        )
        self.policies = Policies(config)
        self.caps = self.policies.caps
        self.global_holdout_pct = config.policies.global_holdout_pct
        self.cascade = Cascade(self.policies, outbox, self.ids, self.tracker, rules.templates)
        self.rules = rules
        self.versions: dict[tuple[str, str], Rule] = {}
        # Rules paused by hand (the daemon reads them from the store): they start nothing.
        self.paused: frozenset[str] = frozenset()
        # rule version -> its audience fused, and the profile fields it reads
        self._audiences: dict[str, tuple[FusedTests, tuple[str, ...]]] = {}
        super().__init__()
        self.set_rules(rules)

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set; running instances keep the version they started with."""
        self.rules = rules
        self.cascade.templates = rules.templates
        self.segments = SegmentEngine(rules.segments)
        for rule in rules.rules.values():
            self.versions[(rule.id, rule.version)] = rule
            # (what try_start checks before the audience must be absent, so that testing
            # the audience first changes nothing)
            if (
                rule.audience is not None
                and rule.trigger.cond is None
                and rule.key is None
                and rule.version not in self._audiences
            ):
                fused = fuse_tests([rule.audience])
                if fused.names == frozenset({"user"}) and "user" in fused.fields:
                    self._audiences[rule.version] = (fused, tuple(fused.fields["user"]))

    # -- starting --------------------------------------------------------------------------

    def start_for_audience(
        self, ws: Workspace, rule: Rule, st: UserState, trigger: dict[str, Any]
    ) -> Instance | None:
        """try_start for one user of a broadcast, most of whom the audience leaves out: an
        audience that reads a few profile fields is tested on those alone first."""
        pre = self._audiences.get(rule.version)
        if pre is not None:
            fused, fields = pre
            profile = st.profile
            view = {
                f: profile[f] if f in profile else PROFILE_DEFAULTS[f]
                for f in fields
                if f in profile or f in PROFILE_DEFAULTS
            }
            errors: list[ExpressionError] = []
            if not fused.test({"user": view}, lambda _n, exc: errors.append(exc)) and not errors:
                return None  # a clean "no"; an error goes the whole way, to be recorded
        return self.try_start(ws, rule, st, trigger)

    def try_start(
        self, ws: Workspace, rule: Rule, st: UserState, trigger: dict[str, Any]
    ) -> Instance | None:
        """Start an instance of `rule` for this user if trigger, audience, mode allow."""
        ctx = context(ws.now, st, trigger, trigger)
        if rule.trigger.cond is not None and not self._test(
            ws, rule.trigger.cond, ctx, rule, "trigger.if", st
        ):
            return None
        return self._start(ws, rule, st, trigger, ctx)

    def _start(
        self,
        ws: Workspace,
        rule: Rule,
        st: UserState,
        trigger: dict[str, Any],
        ctx: dict[str, Any],
    ) -> Instance | None:
        """Start `rule` (whose trigger condition held) if it is not paused and its key,
        audience and mode allow."""
        if rule.id in self.paused:
            return None
        key = ""
        if rule.key is not None:
            try:
                key = rule.key.render(ctx)
            except ExpressionError as exc:
                self._fail(ws, rule.id, "expression_error", "key", str(exc), st, ctx)
                return None
        if rule.audience is not None and not self._test(
            ws, rule.audience, ctx, rule, "audience", st
        ):
            return None
        running = [i for i in st.instances if i.rule_id == rule.id and i.key == key]
        if running and rule.mode == "single":
            return None
        # A restart is the same chain continuing; otherwise the cooldown applies.
        if rule.cooldown_s and not (running and rule.mode == "restart"):
            last = st.last_starts.get((rule.id, key))
            if last is not None and ws.now - last < rule.cooldown_s:
                return None
        if rule.group is not None and not self._make_room(ws, st, rule, running):
            return None
        if running and rule.mode == "restart":
            for inst in running:
                self.end(ws, st, inst, "restarted")
        inst = Instance(
            id=self.ids.next("i"),
            rule_id=rule.id,
            rule_version=rule.version,
            user_id=st.user_id,
            key=key,
            started_at=ws.now,
            trigger=trigger,
            holdout=self._holdout(rule, st.user_id),
        )
        st.instances.append(inst)
        st.last_starts[(rule.id, key)] = ws.now
        ws.started[rule.id] += 1
        ws.journey(rule.id, "", journey.START)
        self._run(ws, st, inst, rule, trigger)
        return inst

    def _holdout(self, rule: Rule, user_id: str) -> str | None:
        """The control group a new instance belongs to: the rule's stable share of users,
        else, for marketing, the stable share of all users kept out of marketing."""
        if in_share(f"holdout:{rule.id}:{user_id}", rule.holdout_pct):
            return "rule"
        if rule.marketing and in_share(f"holdout:{user_id}", self.global_holdout_pct):
            return "global"
        return None

    def _make_room(self, ws: Workspace, st: UserState, rule: Rule, running: list[Instance]) -> bool:
        """A user runs one instance of a group at a time: a higher priority preempts the
        running ones; an equal or lower one does not start (one `group_busy` skip)."""
        others = []
        for inst in st.instances:
            other = self._rule_of(inst)
            if (
                inst.active
                and inst not in running
                and other is not None
                and other.group == rule.group
            ):
                others.append((inst, other))
        if any(other.priority >= rule.priority for _, other in others):
            busy = next(o for _, o in others if o.priority >= rule.priority)
            self.cascade.group_busy(ws, st, rule, busy.id)
            return False
        for inst, _ in others:
            self.end(ws, st, inst, "preempted", reason=rule.id)
        return True

    # -- events ----------------------------------------------------------------------------

    def handle_event(self, ws: Workspace, st: UserState, ev: Event, depth: int = 0) -> None:
        """A user event: facts and segments, reactions, running instances, new triggers;
        then the segment.entered/left events it caused, as events of their own."""
        if depth == 0:  # the user's own event, for their event log
            ws.changes.user_events.append(UserEvent(st.user_id, ev.time, ev.type, ev.id, ev.data))
        apply_facts(ws, st, ev)
        caused = self.segments.on_event(ws, st, ev)
        self._handle(ws, st, ev)
        # A segment may count another's segment events: a chain as long as the segments
        # (a loop of them is a load error, engine/lang/segments.py).
        if depth <= len(self.segments.segments):
            for event in caused:
                self.handle_event(ws, st, event, depth + 1)

    def on_facts_due(self, ws: Workspace, st: UserState) -> None:
        """A segment window of the user ran out (or the interests aged)."""
        for event in self.segments.on_due(ws, st):
            self.handle_event(ws, st, event, 1)

    def _handle(self, ws: Workspace, st: UserState, ev: Event) -> None:
        if ev.type in MESSAGE_EVENTS:
            self._on_reaction(ws, st, ev)
        if st.instances and ev.type in self.rules.watched:
            for inst in list(st.instances):
                if inst.active:
                    self._on_instance_event(ws, st, inst, ev)
        matcher = self.rules.matchers.get(ev.type)
        if matcher is None:
            return
        # Every trigger condition of the event's type, fused, against one context; the
        # user's part is built only when a condition reads it or a rule starts.
        ctx = None
        if matcher.light:
            light = ev.light_context()
            test_ctx = {"event": light, "trigger": light}
        else:
            test_ctx = ctx = context(ws.now, st, ev.context, ev.context)
        rules = matcher.rules
        hits = matcher.test(
            test_ctx,
            lambda n, exc: self._fail(
                ws, rules[n].id, "expression_error", "trigger.if", str(exc), st, test_ctx
            ),
        )
        for n in hits:
            if ctx is None:
                ctx = context(ws.now, st, ev.context, ev.context)
            self._start(ws, rules[n], st, ev.context, ctx)

    def _on_instance_event(self, ws: Workspace, st: UserState, inst: Instance, ev: Event) -> None:
        rule = self._rule_of(inst)
        if rule is None:
            return
        ctx = context(ws.now, st, ev.context, inst.trigger)
        for goal in rule.goals:
            if goal.event == ev.type and (
                goal.cond is None or self._test(ws, goal.cond, ctx, rule, "goal.if", st)
            ):
                self.end(ws, st, inst, "converted", reason=ev.id or ev.type)
                return
        for exit_ in rule.exits:
            if exit_.event == ev.type and (
                exit_.cond is None or self._test(ws, exit_.cond, ctx, rule, "exit_on.if", st)
            ):
                self.end(ws, st, inst, "exited", reason=ev.type)
                return
        if isinstance(inst.state, WaitingFor):
            op = rule.program[inst.pc]
            assert isinstance(op, WaitForOp)
            if op.event == ev.type and (
                op.cond is None
                or self._test(ws, op.cond, ctx, rule, f"step {op.path} wait_for.if", st)
            ):
                ws.journey(rule.id, op.path, journey.EVENT)
                inst.pc, inst.state, inst.due_at = op.on_event_pc, None, None
                self._run(ws, st, inst, rule, ev.context)

    def _on_reaction(self, ws: Workspace, st: UserState, ev: Event) -> None:
        message = record_reaction(ws, st, ev)
        if message is None:
            return
        for inst in list(st.instances):
            state = inst.state
            if not (inst.active and isinstance(state, Awaiting) and state.msg == message.id):
                continue
            rule = self._rule_of(inst)
            if rule is None:
                continue
            if ev.type in REACTIONS_MEETING[state.reaction]:
                inst.pc, inst.state, inst.due_at = inst.pc + 1, None, None
                self._run(ws, st, inst, rule, inst.trigger)
            elif ev.type == "message.failed":
                self._cascade_next(ws, st, inst, rule, state.idx)

    # -- timers ----------------------------------------------------------------------------

    def on_timer(self, ws: Workspace, st: UserState, inst: Instance) -> None:
        """The instance's timer is due (the driver checked due_at <= now)."""
        rule = self._rule_of(inst)
        state, due = inst.state, inst.due_at or ws.now
        inst.due_at = None
        if rule is None:
            self.end(ws, st, inst, "stopped", reason="rule_removed")
            return
        lateness = self.policies.max_lateness_s
        if lateness and ws.now - due > lateness:
            op = rule.program[inst.pc] if inst.pc < len(rule.program) else None
            nxt = (
                rule.program[inst.pc + 1]
                if isinstance(state, Waiting) and inst.pc + 1 < len(rule.program)
                else op
            )
            if isinstance(nxt, SendOp):
                self.cascade.skip(ws, st, inst, rule, nxt, None, None, "expired")
            self.end(ws, st, inst, "expired", reason=f"{int(ws.now - due)}s late")
            return
        if isinstance(state, Waiting):
            inst.pc, inst.state = inst.pc + 1, None
            self._run(ws, st, inst, rule, inst.trigger)
        elif isinstance(state, Deferred):
            op = rule.program[inst.pc]
            assert isinstance(op, SendOp)
            inst.state = None
            if self.cascade.send(
                ws, st, inst, rule, op, state.idx, deferred=True, after_await=state.after_await
            ):
                inst.pc += 1
                self._run(ws, st, inst, rule, inst.trigger)
        elif isinstance(state, Awaiting):
            self._cascade_next(ws, st, inst, rule, state.idx)
        elif isinstance(state, WaitingFor):
            op = rule.program[inst.pc]
            assert isinstance(op, WaitForOp)
            ws.journey(rule.id, op.path, journey.TIMEOUT)
            inst.pc, inst.state = op.on_timeout_pc, None
            self._run(ws, st, inst, rule, inst.trigger)
        else:
            ws.save_instance(inst)

    def _cascade_next(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, idx: int
    ) -> None:
        """The awaited reaction did not come (or the message failed): the next channel."""
        op = rule.program[inst.pc]
        assert isinstance(op, SendOp)
        inst.state, inst.due_at = None, None
        if self.cascade.send(ws, st, inst, rule, op, idx + 1, after_await=True):
            inst.pc += 1
            self._run(ws, st, inst, rule, inst.trigger)

    def on_send_outcome(
        self, ws: Workspace, st: UserState, message_id: str, outcome: Outcome
    ) -> None:
        """The dispatcher's final word on a queued message."""
        message = next((m for m in st.messages if m.id == message_id), None)
        inst = next(
            (i for i in st.instances if isinstance(i.state, Sending) and i.state.msg == message_id),
            None,
        )
        if message is None:
            return
        if inst is None:
            # The instance ended (goal, exit, restart) while the call was in flight: no
            # cascade goes on, but the log must say what became of the message.
            if message.sent_at is None and message.status not in ("failed", "skipped"):
                self.cascade.settle(ws, st, message, outcome)
            return
        rule = self._rule_of(inst)
        if rule is None:
            return
        op = rule.program[inst.pc]
        assert isinstance(op, SendOp)
        state = inst.state
        assert isinstance(state, Sending)
        entry = cascade_of(op, inst)[state.idx]
        inst.state = None
        done = self.cascade.apply_outcome(ws, st, inst, rule, message, entry, outcome)
        if done is None:
            done = self.cascade.send(
                ws, st, inst, rule, op, state.idx + 1, after_await=state.after_await
            )
        if done:
            inst.pc += 1
            self._run(ws, st, inst, rule, inst.trigger)
        ws.save_instance(inst)
