"""A send step's cascade: the first channel the user can be reached on, rendered and handed
to the outbox; a provider's answer settles the message and says whether to go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.base import OutboundMessage, Outcome
from channels.kinds import MarketingLinks, find_kind
from engine.core.context import context
from engine.core.facts import mark_invalid
from engine.core.model import Instance, Message, Record, UserState
from engine.core.policies import Policies
from engine.core.reach import address_key, valid_addresses
from engine.core.tracking import Tracker
from engine.core.variants import cascade_of, choose, template_for
from engine.core.waits import Awaiting, Deferred, Sending
from engine.core.workspace import Failure, IdGen, Workspace
from engine.errors import ExpressionError
from engine.lang.program import CascadeEntry, SendOp, Variant
from engine.lang.rules import Rule
from engine.lang.templates import Template

# Submits a rendered message; returns the outcome at once (sandbox, simulate) or None when
# the dispatcher will report it later through Engine.on_send_outcome.
Outbox = Callable[[OutboundMessage], Outcome | None]

_REACTED = (("clicked_at", "clicked"), ("opened_at", "opened"), ("delivered_at", "delivered"))
STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4}
_AWAITED_FIELD = {"delivered": "delivered_at", "opened": "opened_at", "clicked": "clicked_at"}


class Cascade:
    def __init__(
        self,
        policies: Policies,
        outbox: Outbox,
        ids: IdGen,
        tracker: Tracker,
        templates: dict[str, Template],
    ) -> None:
        self.policies = policies
        self.outbox = outbox
        self.ids = ids
        self.tracker = tracker
        self.templates = templates

    def send(
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
        """Walk the cascade from entry `start`; True when the step is finished, False when
        the instance now waits (quiet hours, the dispatcher, an awaited reaction).

        `event` is the event that led here (a wait_for's event); after a timer, the trigger.
        """
        marketing = rule.marketing
        source = event or inst.trigger

        def eligible(v: Variant) -> bool:
            return self._audience(ws, st, inst, rule, v, source)

        choice = choose(op, inst, eligible)
        if choice is None:
            self.skip(ws, st, inst, rule, op, None, op.template, "no_variant")
            return True
        variant, variant_template, cascade = choice
        if variant is not None and inst.variant is None:
            inst.variant = variant
        if inst.holdout == "rule" or (inst.holdout == "global" and marketing):
            # A control group: the instance goes on, the message is not sent.
            first = cascade[start].channel if start < len(cascade) else None
            if start == 0 or not after_await:
                self.skip(ws, st, inst, rule, op, first, op.template, "held_out", variant)
            return True
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
            tname = template_for(self.templates, op, entry, variant_template)
            template = self.templates.get(tname or "")
            if template is None or channel not in template.channels:
                last = (channel, tname, "not_in_template")
                continue
            addresses, reason = self.policies.reach(st, channel, marketing=marketing)
            if reason:
                last = (channel, tname, reason)
                continue
            if marketing:
                if not deferred:
                    end = self.policies.quiet_until(st, ws)
                    if end is not None:
                        inst.state, inst.due_at = Deferred(idx, after_await), end
                        ws.save_instance(inst)
                        return False
                if self.policies.capped(st, ws.now):
                    self.skip(ws, st, inst, rule, op, channel, tname, "frequency_cap", variant)
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
                    channel, self._render_context(ws, st, inst, message, event or inst.trigger)
                )
            except ExpressionError as exc:
                ws.errors.append(
                    Failure(
                        rule.id,
                        "template_error",
                        f"step {op.path} {channel}",
                        str(exc),
                        st.user_id,
                        inst.trigger.get("id"),
                    )
                )
                last = (channel, tname, "template_error")
                continue
            headers = self._mail_extras(channel, marketing, message, payload)
            message.payload = {**payload, "_headers": headers} if headers else payload
            message.recipient = addresses
            if deferred:
                message.reason = "quiet_hours_deferred"
            st.messages.append(message)
            outcome = self.outbox(
                OutboundMessage(
                    id=message.id,
                    channel=channel,
                    user_id=st.user_id,
                    rule=rule.id,
                    category=rule.category,
                    addresses=addresses,
                    payload=payload,
                    headers=headers,
                )
            )
            if outcome is None:
                inst.state = Sending(idx, message.id, after_await)
                ws.save_instance(inst)
                ws.save_message(message)
                return False
            done = self.apply_outcome(ws, st, inst, rule, message, entry, outcome)
            if done is not None:
                return done
            last = (channel, tname, message.reason)
        if start >= len(cascade) and after_await:
            return True  # the sent message simply had no reaction and no fallback is left
        last_channel, last_template, reason = last
        self.skip(
            ws, st, inst, rule, op, last_channel, last_template, reason or "no_address", variant
        )
        return True

    def apply_outcome(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        message: Message,
        entry: CascadeEntry,
        outcome: Outcome,
    ) -> bool | None:
        """True/False as send() when the cascade stops or waits; None to try the next one."""
        self.settle(ws, st, message, outcome)
        if outcome.kind != "accepted":
            return None
        if entry.await_ and entry.within_s is not None:
            if getattr(message, _AWAITED_FIELD[entry.await_]) is not None:
                # The reaction came before the provider's answer was applied (a mail
                # server's image proxy, a fast receipt): nothing left to wait for.
                return True
            op = rule.program[inst.pc]
            assert isinstance(op, SendOp)
            idx = cascade_of(op, inst).index(entry)
            inst.state, inst.due_at = (
                Awaiting(idx, message.id, entry.await_),
                ws.now + entry.within_s,
            )
            ws.save_instance(inst)
            return False
        return True

    def settle(self, ws: Workspace, st: UserState, message: Message, outcome: Outcome) -> None:
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
            if STATUS_RANK.get(message.status, -1) < STATUS_RANK[status]:
                message.status = status
            if message.reason == "exited":
                message.reason = None  # cancelled while its call was in flight: it went out
            message.sent_at = ws.now
            message.provider_id = outcome.provider_id
            self.record(ws, message, "sent", message.reason)
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

    # -- the timeline ----------------------------------------------------------------------

    @staticmethod
    def record(ws: Workspace, message: Message, status: str, reason: str | None) -> None:
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

    def group_busy(self, ws: Workspace, st: UserState, rule: Rule, busy_rule: str) -> None:
        """A trigger not followed: a rule of the same group, as high or higher, runs for the
        user. One skip for the trigger (step `trigger`), not one per message."""
        message = Message(
            id=self.ids.next("m"),
            instance_id="",
            rule_id=rule.id,
            user_id=st.user_id,
            step="trigger",
            channel=None,
            template=None,
            variant=None,
            category=rule.category,
            status="skipped",
            created_at=ws.now,
            reason="group_busy",
            detail=f"{busy_rule} runs",
        )
        st.messages.append(message)
        ws.save_message(message)
        self.record(ws, message, "skipped", "group_busy")

    def skip(
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
        """The step sends nothing, for `reason`: a skipped message says why."""
        if variant is None and op.variants:
            choice = choose(op, inst)
            variant = None if choice is None else choice[0]
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
        self.record(ws, message, "skipped", reason)

    def _audience(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        variant: Variant,
        event: dict[str, Any],
    ) -> bool:
        if variant.audience is None:
            return True
        try:
            return variant.audience.test(context(ws.now, st, event, inst.trigger))
        except ExpressionError as exc:
            ws.errors.append(
                Failure(
                    rule.id,
                    "expression_error",
                    f"variant {variant.name} audience",
                    str(exc),
                    st.user_id,
                    inst.trigger.get("id"),
                )
            )
            return False

    # -- rendering -------------------------------------------------------------------------

    def _mail_extras(
        self, channel: str, marketing: bool, message: Message, payload: dict[str, Any]
    ) -> dict[str, str]:
        """What a marketing message gets from its channel kind (email: the open pixel and
        RFC 8058 one-click unsubscribe headers), given the tracker's URLs."""
        kind = find_kind(channel)
        if kind is None or not marketing:
            return {}
        links = MarketingLinks(
            open_url=self.tracker.open_url(message.id),
            unsubscribe_url=self.tracker.unsubscribe_url(message.id, channel),
        )
        return kind.marketing(payload, links)

    def _render_context(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        message: Message,
        event: dict[str, Any],
    ) -> dict[str, Any]:
        tracker, mid = self.tracker, message.id
        ctx = context(ws.now, st, event, inst.trigger)
        ctx["message"] = {"id": mid, "channel": message.channel, "rule": message.rule_id}
        ctx["track"] = lambda url: tracker.click_url(mid, str(url))
        ctx["unsubscribe_url"] = tracker.unsubscribe_url(mid, message.channel or "")
        ctx["variant"] = message.variant
        ctx["rule"] = {"id": message.rule_id}
        return ctx
