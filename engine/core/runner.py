"""The chain runner: each instance is a durable state machine over its rule's program.

All methods are synchronous and work on a Workspace; the driver (the Processor) loads users
before and commits the workspace after, so one batch of events or timers is one
transaction. Steps run from a table of op handlers, as Home Assistant's script engine does;
what an instance waits on is a typed state (engine/core/waits.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from channels.base import Outcome
from engine.clock import parse_time
from engine.core.cascade import Cascade, Outbox
from engine.core.context import context
from engine.core.facts import apply_facts
from engine.core.model import PROFILE_DEFAULTS, Instance, Message, Record, UserState
from engine.core.policies import Policies
from engine.core.tracking import Tracker
from engine.core.variants import choose
from engine.core.waits import Awaiting, Deferred, Sending, Waiting, WaitingFor, WaitState
from engine.core.workspace import Failure, IdGen, Workspace
from engine.errors import ExpressionError
from engine.lang.config import Config
from engine.lang.events import MESSAGE_EVENTS, Event
from engine.lang.expressions import Expression, FusedTests, fuse_tests
from engine.lang.localtime import next_local_time
from engine.lang.program import (
    REACTIONS_MEETING,
    BranchOp,
    JumpOp,
    Op,
    SendOp,
    StopOp,
    WaitForOp,
    WaitOp,
)
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet

_REACTION_FIELD = {
    "message.delivered": "delivered_at",
    "message.opened": "opened_at",
    "message.clicked": "clicked_at",
}
_WITH_DISPATCHER = frozenset({"queued", "sending", "answered"})
_STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4}
# An op handler runs one step; True: go on with the next op, False: the instance waits or
# has ended.
Handler = Callable[[Workspace, UserState, Instance, Rule, Any, dict[str, Any]], bool]


class Engine:
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
        self.cascade = Cascade(self.policies, outbox, self.ids, self.tracker, rules.templates)
        self.rules = rules
        self.versions: dict[tuple[str, str], Rule] = {}
        # rule version -> its audience fused, and the profile fields it reads
        self._audiences: dict[str, tuple[FusedTests, tuple[str, ...]]] = {}
        self._ops: dict[type[Any], Handler] = {
            WaitOp: self._op_wait,
            SendOp: self._op_send,
            WaitForOp: self._op_wait_for,
            BranchOp: self._op_branch,
            JumpOp: self._op_jump,
            StopOp: self._op_stop,
        }
        self.set_rules(rules)

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set; running instances keep the version they started with."""
        self.rules = rules
        self.cascade.templates = rules.templates
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

    def _rule_of(self, inst: Instance) -> Rule | None:
        return self.versions.get((inst.rule_id, inst.rule_version)) or self.rules.rules.get(
            inst.rule_id
        )

    # -- failures --------------------------------------------------------------------------

    def _test(
        self,
        ws: Workspace,
        expr: Expression,
        ctx: dict[str, Any],
        rule: Rule,
        where: str,
        st: UserState,
    ) -> bool:
        """A condition that cannot be evaluated is false; the rule keeps running."""
        try:
            return expr.test(ctx)
        except ExpressionError as exc:
            self._fail(ws, rule.id, "expression_error", where, str(exc), st, ctx)
            return False

    @staticmethod
    def _fail(
        ws: Workspace,
        rule: str,
        kind: str,
        where: str,
        message: str,
        st: UserState,
        ctx: dict[str, Any] | None = None,
        *,
        stopped: bool = False,
    ) -> None:
        event = (ctx or {}).get("event")
        event_id = event.get("id") if isinstance(event, dict) else None
        ws.errors.append(Failure(rule, kind, where, message, st.user_id, event_id, stopped))

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
        """Start `rule` (whose trigger condition held) if its key, audience and mode allow."""
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
        )
        st.instances.append(inst)
        st.last_starts[(rule.id, key)] = ws.now
        ws.started[rule.id] += 1
        self._run(ws, st, inst, rule, trigger)
        return inst

    # -- events ----------------------------------------------------------------------------

    def handle_event(self, ws: Workspace, st: UserState, ev: Event) -> None:
        """A user event: facts, reactions, running instances, then new triggers."""
        apply_facts(ws, st, ev)
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
                inst.pc, inst.state, inst.due_at = op.on_event_pc, None, None
                self._run(ws, st, inst, rule, ev.context)

    def _on_reaction(self, ws: Workspace, st: UserState, ev: Event) -> None:
        message = _find_message(st, ev.data)
        if message is None:
            channel = ev.data.get("channel")
            if ev.type == "message.unsubscribed" and isinstance(channel, str):
                # An old message (not loaded) still unsubscribes: consent is what matters.
                st.profile.setdefault("consent", {})[channel] = False
                ws.save_profile(st)
            return
        field = _REACTION_FIELD.get(ev.type)
        if field and getattr(message, field) is None:
            # When it happened, as orders are dated (attribution compares the two): the
            # event's time, unless it claims the future or a time before the message.
            at = max(min(ev.time, ws.now), message.created_at)
            setattr(message, field, at)
            # A click implies the open and the delivery, an open implies the delivery.
            order = ("delivered_at", "opened_at", "clicked_at")
            for implied in order[: order.index(field)]:
                if getattr(message, implied) is None:
                    setattr(message, implied, at)
            new_status = ev.type.split(".", 1)[1]
            # A message still with the dispatcher keeps its status (the dispatcher and a
            # restart go by it); the provider's answer, when settled, reads the times.
            if message.status not in _WITH_DISPATCHER and _STATUS_RANK.get(
                new_status, 0
            ) > _STATUS_RANK.get(message.status, -1):
                message.status = new_status
        elif ev.type == "message.unsubscribed" and message.channel:
            st.profile.setdefault("consent", {})[message.channel] = False
            ws.save_profile(st)
        elif ev.type == "message.failed" and message.status in ("queued", "sent"):
            message.status, message.reason = "failed", "provider_rejected"
        ws.save_message(message)
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
        entry = choose(op, inst)[2][state.idx]
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

    # -- running ---------------------------------------------------------------------------

    def _run(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, event: dict[str, Any]
    ) -> None:
        """Execute ops from inst.pc until the instance waits or ends."""
        program, ops = rule.program, self._ops
        while inst.active:
            if inst.pc >= len(program):
                self.end(ws, st, inst, "completed")
                return
            op: Op = program[inst.pc]
            if not ops[type(op)](ws, st, inst, rule, op, event):
                return

    def _wait(self, ws: Workspace, inst: Instance, state: WaitState, due: float | None) -> bool:
        inst.state, inst.due_at = state, due
        ws.save_instance(inst)
        return False

    def _op_wait(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: WaitOp, event: Any
    ) -> bool:
        due = ws.now + op.delay_s
        if op.until is not None:
            ctx = context(ws.now, st, event, inst.trigger)
            try:
                text = op.until.render(ctx)
            except ExpressionError as exc:
                return self._error(ws, st, inst, rule, op.path, "expression_error", str(exc), ctx)
            try:
                due = parse_time(text) + op.offset_s + op.delay_s
            except ValueError:
                detail = f"wait.until: '{text[:100]}' is not an ISO 8601 time"
                return self._error(ws, st, inst, rule, op.path, "invalid_time", detail, ctx)
        if op.at is not None:
            due = next_local_time(max(due, ws.now), op.at, self.policies.zone(st))
        if due > ws.now:
            return self._wait(ws, inst, Waiting(), due)
        inst.pc += 1
        return True

    def _op_send(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: SendOp, event: Any
    ) -> bool:
        if not self.cascade.send(ws, st, inst, rule, op, 0, event=event):
            return False
        inst.pc += 1
        return True

    def _op_wait_for(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: WaitForOp, event: Any
    ) -> bool:
        return self._wait(
            ws, inst, WaitingFor(), None if op.timeout_s is None else ws.now + op.timeout_s
        )

    def _op_branch(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: BranchOp, event: Any
    ) -> bool:
        ctx = context(ws.now, st, event, inst.trigger)
        ok = self._test(ws, op.cond, ctx, rule, f"step {op.path} if", st)
        inst.pc = inst.pc + 1 if ok else op.else_pc
        return True

    def _op_jump(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: JumpOp, event: Any
    ) -> bool:
        inst.pc = op.target
        return True

    def _op_stop(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: StopOp, event: Any
    ) -> bool:
        self.end(ws, st, inst, "completed", reason="stop")
        return False

    def _error(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        step: str,
        kind: str,
        detail: str,
        ctx: dict[str, Any],
    ) -> bool:
        """Bad data stopped the instance: it ends as `error`, visibly (timeline, records,
        the processor's log line and metric)."""
        self._fail(ws, rule.id, kind, f"step {step}", detail, st, ctx, stopped=True)
        ws.records.append(
            Record(ws.now, rule.id, st.user_id, step, None, None, inst.variant, "error", kind)
        )
        self.end(ws, st, inst, "error", reason=f"step {step}: {detail}")
        return False

    def end(
        self, ws: Workspace, st: UserState, inst: Instance, status: str, reason: str | None = None
    ) -> None:
        """End an instance: cancel its timer and anything it had not sent yet."""
        state = inst.state
        rule = self._rule_of(inst)
        if isinstance(state, Deferred) and rule is not None:
            op = rule.program[inst.pc]
            if isinstance(op, SendOp):
                channel = choose(op, inst)[2][state.idx].channel
                self.cascade.skip(ws, st, inst, rule, op, channel, None, "exited")
        for message in st.messages:
            if message.instance_id == inst.id and message.status == "queued":
                message.status, message.reason = "cancelled", "exited"
                ws.save_message(message)
        inst.status, inst.ended_at, inst.end_reason = status, ws.now, reason
        inst.due_at, inst.state = None, None
        if inst in st.instances:
            st.instances.remove(inst)
        ws.ended[(inst.rule_id, status)] += 1
        ws.save_instance(inst)


def _find_message(st: UserState, data: dict[str, Any]) -> Message | None:
    mid = data.get("message_id")
    for message in reversed(st.messages):
        if mid is not None:
            if message.id == mid or message.provider_id == mid:
                return message
        elif (
            message.rule_id == data.get("rule")
            and message.channel == data.get("channel")
            and message.status != "skipped"
        ):
            return message
    return None
