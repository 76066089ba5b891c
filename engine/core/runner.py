"""The chain runner: each instance is a durable state machine over its rule's program.

All methods are synchronous and work on a Workspace; the driver loads users before and
saves the workspace after, so one batch of events or timers is one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from channels.base import OutboundMessage, Outcome
from engine.core.facts import apply_facts, mark_invalid
from engine.core.model import (
    PROFILE_DEFAULTS,
    Instance,
    Message,
    Record,
    UserState,
    profile_context,
)
from engine.core.reach import address_key, consent_reason, valid_addresses
from engine.core.tracking import Tracker
from engine.core.workspace import IdGen, Workspace
from engine.errors import ExpressionError
from engine.lang.config import Config
from engine.lang.durations import parse_duration
from engine.lang.events import MESSAGE_EVENTS, Event
from engine.lang.expressions import Expression, FusedTests, fuse_tests
from engine.lang.localtime import next_local_time, parse_time_of_day, quiet_until, zone
from engine.lang.program import (
    REACTIONS_MEETING,
    BranchOp,
    CascadeEntry,
    JumpOp,
    SendOp,
    StopOp,
    WaitForOp,
    WaitOp,
)
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet

log = structlog.get_logger("kaskad.runner")

# Submits a rendered message; returns the outcome at once (sandbox, simulate) or None when
# the dispatcher will report it later through Engine.on_send_outcome.
Outbox = Callable[[OutboundMessage], Outcome | None]
_REACTION_FIELD = {
    "message.delivered": "delivered_at",
    "message.opened": "opened_at",
    "message.clicked": "clicked_at",
}
_WITH_DISPATCHER = frozenset({"queued", "sending", "answered"})
_REACTED = (("clicked_at", "clicked"), ("opened_at", "opened"), ("delivered_at", "delivered"))
_STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4}
_AWAITED_FIELD = {"delivered": "delivered_at", "opened": "opened_at", "clicked": "clicked_at"}


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
        self.outbox = outbox
        self.ids = ids or IdGen()
        self.tracker = tracker or Tracker(
            config.tracking.base_url, config.tracking.secret or "kaskad-dev-secret"
        )
        policies = config.policies
        self.max_lateness_s = parse_duration(policies.max_lateness)
        self.caps = [(c.per_s, c.max) for c in policies.frequency_caps]
        quiet = policies.quiet_hours
        self.quiet = (
            None
            if quiet is None
            else (parse_time_of_day(quiet.start), parse_time_of_day(quiet.end))
        )
        self.rules = rules
        self.versions: dict[tuple[str, str], Rule] = {}
        # rule version -> its audience fused, and the profile fields it reads
        self._audiences: dict[str, tuple[FusedTests, tuple[str, ...]]] = {}
        self.set_rules(rules)

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set; running instances keep the version they started with."""
        self.rules = rules
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

    # -- context ---------------------------------------------------------------------------

    def _ctx(
        self, ws: Workspace, st: UserState, event: dict[str, Any], trigger: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "event": event,
            "trigger": trigger,
            "user": profile_context(st.profile),
            "now": datetime.fromtimestamp(ws.now, UTC),
        }

    def _test(self, ws: Workspace, expr: Expression, ctx: dict[str, Any], where: str) -> bool:
        try:
            return expr.test(ctx)
        except ExpressionError as exc:
            self._failed(ws, where, exc)
            return False

    @staticmethod
    def _failed(ws: Workspace, where: str, exc: ExpressionError) -> None:
        # A condition that cannot be evaluated is false; the rule keeps running.
        ws.errors.append(f"{where}: {exc}")
        log.warning("expression.failed", where=where, error=str(exc))

    def _rule_of(self, inst: Instance) -> Rule | None:
        return self.versions.get((inst.rule_id, inst.rule_version)) or self.rules.rules.get(
            inst.rule_id
        )

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
            test_ctx = ctx = self._ctx(ws, st, ev.context, ev.context)
        rules = matcher.rules
        hits = matcher.test(
            test_ctx,
            lambda n, exc: self._failed(ws, f"{rules[n].id}: trigger.if", exc),
        )
        for n in hits:
            if ctx is None:
                ctx = self._ctx(ws, st, ev.context, ev.context)
            self._start(ws, rules[n], st, ev.context, ctx)

    def try_start(
        self, ws: Workspace, rule: Rule, st: UserState, trigger: dict[str, Any]
    ) -> Instance | None:
        """Start an instance of `rule` for this user if trigger, audience, mode allow."""
        ctx = self._ctx(ws, st, trigger, trigger)
        if rule.trigger.cond is not None and not self._test(
            ws, rule.trigger.cond, ctx, f"{rule.id}: trigger.if"
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
                ws.errors.append(f"{rule.id}: key: {exc}")
                return None
        if rule.audience is not None and not self._test(
            ws, rule.audience, ctx, f"{rule.id}: audience"
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
        self._run(ws, st, inst, rule, trigger)
        return inst

    def _on_instance_event(self, ws: Workspace, st: UserState, inst: Instance, ev: Event) -> None:
        rule = self._rule_of(inst)
        if rule is None:
            return
        ctx = self._ctx(ws, st, ev.context, inst.trigger)
        for goal in rule.goals:
            if goal.event == ev.type and (
                goal.cond is None or self._test(ws, goal.cond, ctx, f"{rule.id}: goal.if")
            ):
                self.end(ws, st, inst, "converted", reason=ev.id or ev.type)
                return
        for exit_ in rule.exits:
            if exit_.event == ev.type and (
                exit_.cond is None or self._test(ws, exit_.cond, ctx, f"{rule.id}: exit_on.if")
            ):
                self.end(ws, st, inst, "exited", reason=ev.type)
                return
        state = inst.state
        if state and state["kind"] == "wait_for":
            op = rule.program[inst.pc]
            assert isinstance(op, WaitForOp)
            if op.event == ev.type and (
                op.cond is None
                or self._test(ws, op.cond, ctx, f"{rule.id}: step {op.path} wait_for.if")
            ):
                inst.pc, inst.state, inst.due_at = op.on_event_pc, None, None
                self._run(ws, st, inst, rule, ev.context)

    def _on_reaction(self, ws: Workspace, st: UserState, ev: Event) -> None:
        message = self._find_message(st, ev.data)
        if message is None:
            channel = ev.data.get("channel")
            if ev.type == "message.unsubscribed" and isinstance(channel, str):
                # An old message (not loaded) still unsubscribes: consent is what matters.
                st.profile.setdefault("consent", {})[channel] = False
                ws.save_profile(st)
                return
            log.info("reaction.unknown_message", user=st.user_id, type=ev.type)
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
            if not (
                inst.active and state and state["kind"] == "await" and state["msg"] == message.id
            ):
                continue
            rule = self._rule_of(inst)
            if rule is None:
                continue
            if ev.type in REACTIONS_MEETING[state["await"]]:
                inst.pc, inst.state, inst.due_at = inst.pc + 1, None, None
                self._run(ws, st, inst, rule, inst.trigger)
            elif ev.type == "message.failed":
                self._cascade_next(ws, st, inst, rule, state)

    def _find_message(self, st: UserState, data: dict[str, Any]) -> Message | None:
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

    # -- timers ----------------------------------------------------------------------------

    def on_timer(self, ws: Workspace, st: UserState, inst: Instance) -> None:
        """The instance's timer is due (the driver checked due_at <= now)."""
        rule = self._rule_of(inst)
        state, due = inst.state or {}, inst.due_at or ws.now
        inst.due_at = None
        if rule is None:
            self.end(ws, st, inst, "stopped", reason="rule_removed")
            return
        if self.max_lateness_s and ws.now - due > self.max_lateness_s:
            op = rule.program[inst.pc] if inst.pc < len(rule.program) else None
            nxt = (
                rule.program[inst.pc + 1]
                if state.get("kind") == "wait" and inst.pc + 1 < len(rule.program)
                else op
            )
            if isinstance(nxt, SendOp):
                self._record_skip(ws, st, inst, rule, nxt, None, None, "expired")
            self.end(ws, st, inst, "expired", reason=f"{int(ws.now - due)}s late")
            return
        kind = state.get("kind")
        if kind == "wait":
            inst.pc, inst.state = inst.pc + 1, None
            self._run(ws, st, inst, rule, inst.trigger)
        elif kind == "defer":
            op = rule.program[inst.pc]
            assert isinstance(op, SendOp)
            inst.state = None
            if self._send(
                ws,
                st,
                inst,
                rule,
                op,
                state["idx"],
                deferred=True,
                after_await=state.get("after_await", False),
            ):
                inst.pc += 1
                self._run(ws, st, inst, rule, inst.trigger)
        elif kind == "await":
            self._cascade_next(ws, st, inst, rule, state)
        elif kind == "wait_for":
            op = rule.program[inst.pc]
            assert isinstance(op, WaitForOp)
            inst.pc, inst.state = op.on_timeout_pc, None
            self._run(ws, st, inst, rule, inst.trigger)
        else:
            ws.save_instance(inst)

    def _cascade_next(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, state: dict[str, Any]
    ) -> None:
        """The awaited reaction did not come (or the message failed): the next channel."""
        op = rule.program[inst.pc]
        assert isinstance(op, SendOp)
        inst.state, inst.due_at = None, None
        if self._send(ws, st, inst, rule, op, state["idx"] + 1, after_await=True):
            inst.pc += 1
            self._run(ws, st, inst, rule, inst.trigger)

    # -- running ---------------------------------------------------------------------------

    def _run(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, event: dict[str, Any]
    ) -> None:
        """Execute ops from inst.pc until the instance waits or ends."""
        program = rule.program
        while inst.active:
            if inst.pc >= len(program):
                self.end(ws, st, inst, "completed")
                return
            op = program[inst.pc]
            if isinstance(op, WaitOp):
                due = self._wait_due(ws, st, inst, rule, op, event)
                if due is None:
                    return
                if due > ws.now:
                    inst.state, inst.due_at = {"kind": "wait"}, due
                    ws.save_instance(inst)
                    return
                inst.pc += 1
            elif isinstance(op, SendOp):
                if not self._send(ws, st, inst, rule, op, 0, event=event):
                    return
                inst.pc += 1
            elif isinstance(op, WaitForOp):
                inst.state = {"kind": "wait_for"}
                inst.due_at = None if op.timeout_s is None else ws.now + op.timeout_s
                ws.save_instance(inst)
                return
            elif isinstance(op, BranchOp):
                ctx = self._ctx(ws, st, event, inst.trigger)
                ok = self._test(ws, op.cond, ctx, f"{rule.id}: step {op.path} if")
                inst.pc = inst.pc + 1 if ok else op.else_pc
            elif isinstance(op, JumpOp):
                inst.pc = op.target
            elif isinstance(op, StopOp):
                self.end(ws, st, inst, "completed", reason="stop")
                return

    def _wait_due(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        op: WaitOp,
        event: dict[str, Any],
    ) -> float | None:
        due = ws.now + op.delay_s
        if op.until is not None:
            from engine.clock import parse_time

            try:
                text = op.until.render(self._ctx(ws, st, event, inst.trigger))
                due = parse_time(text) + op.offset_s + op.delay_s
            except (ExpressionError, ValueError) as exc:
                ws.errors.append(f"{rule.id}: step {op.path} wait.until: {exc}")
                self.end(ws, st, inst, "stopped", reason=f"wait.until: {exc}")
                return None
        if op.at is not None:
            due = next_local_time(max(due, ws.now), op.at, self._zone(st))
        return due

    def _zone(self, st: UserState) -> Any:
        name = st.profile.get("timezone") or self.config.policies.timezone
        try:
            return zone(name)
        except ValueError:
            return zone(self.config.policies.timezone)

    def _variant(
        self, op: SendOp, inst: Instance
    ) -> tuple[str | None, str | None, tuple[CascadeEntry, ...]]:
        if not op.variants:
            return None, None, op.cascade
        # Stable split: the same user always gets the same variant of a rule.
        digest = hashlib.sha256(f"{inst.rule_id}:{inst.user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in op.variants)
        chosen = op.variants[-1]
        for variant in op.variants:
            if point < variant.weight:
                chosen = variant
                break
            point -= variant.weight
        return chosen.name, chosen.template, chosen.cascade or op.cascade

    def _template_for(
        self, op: SendOp, entry: CascadeEntry, variant_template: str | None
    ) -> str | None:
        """A variant's template replaces the step's on every channel it has a block for."""
        if variant_template is not None:
            replacement = self.rules.templates.get(variant_template)
            if replacement is not None and entry.channel in replacement.channels:
                return variant_template
        return entry.template or op.template

    def _capped(self, ws: Workspace, st: UserState) -> bool:
        for per_s, limit in self.caps:
            since = ws.now - per_s
            count = sum(
                1
                for m in st.messages
                if m.category == "marketing" and m.sent_at is not None and m.sent_at > since
            )
            if count >= limit:
                return True
        return False

    def _send(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        op: SendOp,
        start: int,
        *,
        deferred: bool = False,
        after_await: bool = False,
        event: dict[str, Any] | None = None,
    ) -> bool:
        """Walk the cascade from `start`; True when the step is finished.

        `event` is the event that led here (a wait_for's event); after a timer it is the
        trigger.
        """
        variant, variant_template, cascade = self._variant(op, inst)
        if variant is not None and inst.variant is None:
            inst.variant = variant
        profile = st.profile
        marketing = rule.marketing
        last: tuple[str | None, str | None, str | None] = (None, op.template, None)
        # Going on after a channel's final failure: its reason (retries_exhausted...) is the
        # last one tried, not a missing address, if no other channel is left.
        before = cascade[start - 1].channel if 0 < start <= len(cascade) else None
        for m in st.messages:
            if (m.instance_id, m.step, m.channel, m.status) == (inst.id, op.path, before, "failed"):
                last = (m.channel, m.template, m.reason)
        for idx in range(start, len(cascade)):
            entry = cascade[idx]
            channel = entry.channel
            tname = self._template_for(op, entry, variant_template)
            template = self.rules.templates.get(tname or "")
            if template is None or channel not in template.channels:
                last = (channel, tname, "not_in_template")
                continue
            addresses, reason = valid_addresses(profile, channel)
            reason = reason or consent_reason(
                profile, channel, marketing=marketing, opt_in=self.config.policies.opt_in(channel)
            )
            if reason:
                last = (channel, tname, reason)
                continue
            if marketing:
                if self.quiet is not None and not deferred:
                    end = quiet_until(ws.now, self.quiet[0], self.quiet[1], self._zone(st))
                    if end is not None:
                        inst.state = {"kind": "defer", "idx": idx, "after_await": after_await}
                        inst.due_at = end
                        ws.save_instance(inst)
                        return False
                if self._capped(ws, st):
                    self._record_skip(
                        ws, st, inst, rule, op, channel, tname, "frequency_cap", variant=variant
                    )
                    return True
            message = Message(
                id=self.ids.next("m"),
                instance_id=inst.id,
                rule_id=rule.id,
                user_id=st.user_id,
                step=op.path,
                channel=channel,
                template=tname,
                variant=variant,
                category=rule.category,
                status="queued",
                created_at=ws.now,
            )
            try:
                payload = template.render(
                    channel, self._render_ctx(ws, st, inst, message, event or inst.trigger)
                )
            except ExpressionError as exc:
                ws.errors.append(f"{rule.id}: step {op.path}: {exc}")
                log.warning(
                    "template.failed", rule=rule.id, step=op.path, channel=channel, error=str(exc)
                )
                last = (channel, tname, "template_error")
                continue
            headers = self._mail_extras(channel, marketing, message, payload)
            message.payload = {**payload, "_headers": headers} if headers else payload
            message.recipient = addresses
            if deferred:
                message.reason = "quiet_hours_deferred"
            st.messages.append(message)
            outbound = OutboundMessage(
                id=message.id,
                channel=channel,
                user_id=st.user_id,
                rule=rule.id,
                category=rule.category,
                addresses=addresses,
                payload=payload,
                headers=headers,
            )
            outcome = self.outbox(outbound)
            if outcome is None:
                inst.state = {
                    "kind": "sending",
                    "idx": idx,
                    "msg": message.id,
                    "after_await": after_await,
                }
                ws.save_instance(inst)
                ws.save_message(message)
                return False
            done = self._apply_outcome(ws, st, inst, rule, message, entry, outcome)
            if done is not None:
                return done
            last = (channel, tname, message.reason)
        if start >= len(cascade) and after_await:
            return True  # the sent message simply had no reaction and no fallback is left
        last_channel, last_template, reason = last
        self._record_skip(
            ws,
            st,
            inst,
            rule,
            op,
            last_channel,
            last_template,
            reason or "no_address",
            variant=variant,
        )
        return True

    def _mail_extras(
        self, channel: str, marketing: bool, message: Message, payload: dict[str, Any]
    ) -> dict[str, str]:
        """Marketing mail: RFC 8058 one-click unsubscribe headers and the open pixel."""
        if channel != "email" or not marketing:
            return {}
        if isinstance(payload.get("html"), str):
            pixel = (
                f'<img src="{self.tracker.open_url(message.id)}" width="1" height="1" '
                'alt="" style="display:none">'
            )
            html = payload["html"]
            at = html.lower().rfind("</body>")
            payload["html"] = html[:at] + pixel + html[at:] if at >= 0 else html + pixel
        return {"List-Unsubscribe": self.tracker.unsubscribe_url(message.id, "email")}

    def _render_ctx(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        message: Message,
        event: dict[str, Any],
    ) -> dict[str, Any]:
        tracker, mid = self.tracker, message.id
        ctx = self._ctx(ws, st, event, inst.trigger)
        ctx["message"] = {"id": mid, "channel": message.channel, "rule": message.rule_id}
        ctx["track"] = lambda url: tracker.click_url(mid, str(url))
        ctx["unsubscribe_url"] = tracker.unsubscribe_url(mid, message.channel or "")
        ctx["variant"] = message.variant
        ctx["rule"] = {"id": message.rule_id}
        return ctx

    def _apply_outcome(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        message: Message,
        entry: CascadeEntry,
        outcome: Outcome,
    ) -> bool | None:
        """True/False as _send when the cascade stops or waits; None to try the next channel."""
        self._settle(ws, st, message, outcome)
        if outcome.kind == "accepted":
            if entry.await_ and entry.within_s is not None:
                if getattr(message, _AWAITED_FIELD[entry.await_]) is not None:
                    # The reaction came before the provider's answer was applied (a mail
                    # server's image proxy, a fast receipt): nothing left to wait for.
                    return True
                inst.state = {
                    "kind": "await",
                    "idx": self._entry_index(inst, rule, entry),
                    "msg": message.id,
                    "await": entry.await_,
                }
                inst.due_at = ws.now + entry.within_s
                ws.save_instance(inst)
                return False
            return True
        return None

    def _settle(self, ws: Workspace, st: UserState, message: Message, outcome: Outcome) -> None:
        """Record the provider's final answer on the message (and dead addresses on the
        profile); what the cascade does next is the caller's business."""
        ws.save_message(message)
        if outcome.kind == "accepted":
            if outcome.dead_addresses and message.channel:
                # Some of the user's devices are gone: later sends skip them.
                mark_invalid(st, message.channel, list(outcome.dead_addresses))
                ws.save_profile(st)
            # A reaction that came before the answer (an image proxy, a fast receipt)
            # left its time: the status is the furthest the message got.
            status = next(
                (name for at, name in _REACTED if getattr(message, at) is not None), "sent"
            )
            if _STATUS_RANK.get(message.status, -1) < _STATUS_RANK[status]:
                message.status = status
            if message.reason == "exited":
                message.reason = None  # cancelled while its call was in flight: it went out
            message.sent_at = ws.now
            message.provider_id = outcome.provider_id
            self._record(ws, message, "sent", message.reason)
            return
        message.status = "failed"
        message.detail = outcome.detail
        if outcome.kind == "reject_recipient":
            # The address is dead (or the user opted out): later sends skip it with
            # address_invalid / no_consent; this one counts as rejected by the provider.
            dead = list(outcome.dead_addresses)
            if not dead and message.channel:
                dead = [address_key(a) for a in valid_addresses(st.profile, message.channel)[0]]
            if message.channel:
                if outcome.opt_out:
                    st.profile.setdefault("consent", {})[message.channel] = False
                else:
                    mark_invalid(st, message.channel, dead)
                ws.save_profile(st)
            message.reason = "provider_rejected"
        elif outcome.kind == "retry":
            message.reason = "retries_exhausted"
        else:
            message.reason = "provider_rejected"

    def _entry_index(self, inst: Instance, rule: Rule, entry: CascadeEntry) -> int:
        op = rule.program[inst.pc]
        assert isinstance(op, SendOp)
        cascade = self._variant(op, inst)[2]
        return cascade.index(entry)

    def on_send_outcome(
        self, ws: Workspace, st: UserState, message_id: str, outcome: Outcome
    ) -> None:
        """The dispatcher's final word on a queued message."""
        message = next((m for m in st.messages if m.id == message_id), None)
        inst = next(
            (
                i
                for i in st.instances
                if i.state and i.state.get("msg") == message_id and i.state["kind"] == "sending"
            ),
            None,
        )
        if message is None:
            return
        if inst is None:
            # The instance ended (goal, exit, restart) while the call was in flight: no
            # cascade goes on, but the log must say what became of the message.
            if message.sent_at is None and message.status not in ("failed", "skipped"):
                self._settle(ws, st, message, outcome)
            return
        rule = self._rule_of(inst)
        if rule is None:
            return
        op = rule.program[inst.pc]
        assert isinstance(op, SendOp)
        state = inst.state or {}
        entry = self._variant(op, inst)[2][state["idx"]]
        inst.state = None
        done = self._apply_outcome(ws, st, inst, rule, message, entry, outcome)
        if done is None:
            done = self._send(
                ws,
                st,
                inst,
                rule,
                op,
                state["idx"] + 1,
                after_await=state.get("after_await", False),
            )
        if done:
            inst.pc += 1
            self._run(ws, st, inst, rule, inst.trigger)
        ws.save_instance(inst)

    # -- records and endings ---------------------------------------------------------------

    def _record(self, ws: Workspace, message: Message, status: str, reason: str | None) -> None:
        ws.records.append(
            Record(
                time=message.sent_at if message.sent_at is not None else ws.now,
                rule=message.rule_id,
                user_id=message.user_id,
                step=message.step,
                channel=message.channel,
                template=message.template,
                variant=message.variant,
                status=status,
                reason=reason,
            )
        )

    def _record_skip(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        op: SendOp,
        channel: str | None,
        template: str | None,
        reason: str,
        variant: str | None = None,
    ) -> None:
        if variant is None and op.variants:
            variant = self._variant(op, inst)[0]
        message = Message(
            id=self.ids.next("m"),
            instance_id=inst.id,
            rule_id=rule.id,
            user_id=st.user_id,
            step=op.path,
            channel=channel,
            template=template,
            variant=variant,
            category=rule.category,
            status="skipped",
            created_at=ws.now,
            reason=reason,
        )
        st.messages.append(message)
        ws.save_message(message)
        self._record(ws, message, "skipped", reason)
        log.info(
            "send.skipped",
            rule=rule.id,
            instance=inst.id,
            user=st.user_id,
            channel=channel,
            reason=reason,
        )

    def end(
        self, ws: Workspace, st: UserState, inst: Instance, status: str, reason: str | None = None
    ) -> None:
        """End an instance: cancel its timer and anything it had not sent yet."""
        state = inst.state or {}
        rule = self._rule_of(inst)
        if state.get("kind") == "defer" and rule is not None:
            op = rule.program[inst.pc]
            if isinstance(op, SendOp):
                channel = self._variant(op, inst)[2][state["idx"]].channel
                self._record_skip(ws, st, inst, rule, op, channel, None, "exited")
        for message in st.messages:
            if message.instance_id == inst.id and message.status == "queued":
                message.status, message.reason = "cancelled", "exited"
                ws.save_message(message)
        inst.status, inst.ended_at, inst.end_reason = status, ws.now, reason
        inst.due_at, inst.state = None, None
        if inst in st.instances:
            st.instances.remove(inst)
        ws.save_instance(inst)
