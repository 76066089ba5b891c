"""Actions by hand (issue 13): pause and resume a rule, end a running instance, send a
test of a template. The API and the dashboard's forms both call these; each is recorded in
the audit log with who (the account's name) and when."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.base import OutboundMessage, Outcome
from channels.kinds import find_kind
from engine.clock import Clock
from engine.core.addresses import normalize
from engine.core.tracking import Tracker
from engine.core.workspace import Workspace
from engine.lang.config import Config
from engine.runtime.preview_data import sample_input, user_input
from engine.store.base import Store
from engine.store.controls import AuditRow, RuleControl

if TYPE_CHECKING:
    from engine.runtime.dispatch import Dispatcher
    from engine.runtime.processor import Processor
    from engine.runtime.reload import RuleManager

ENDED_BY_USER = "ended_by_user"  # the end reason of an instance ended by hand
TEST_USER = "test-send"  # the recipient id of a test send (never a user's message)
TEST_PREFIX = "test-"  # a test send's id starts so (tracking links know it by that)
TEST_HEADER = "X-Kaskad-Test"  # on a test e-mail, beside "[Test]" before its subject
# The fields a test's "[Test] " mark goes before: e-mail's subject, a push's title.
_MARKED_FIELDS = ("subject", "title")


def mark_test(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with "[Test] " before its subject or title (text bodies are left as
    they are: a WhatsApp template's parameters must stay what the template says)."""
    for key in _MARKED_FIELDS:
        if isinstance(payload.get(key), str):
            payload[key] = "[Test] " + payload[key]
    return payload


def address_problem(channel: str, address: Any) -> str | None:
    """What is wrong with a test's address, as the channel's kind checks a profile's (and
    an e-mail needs an @, a phone number 3 to 20 digits), else None."""
    kind = find_kind(channel)
    if kind is not None:
        problem = kind.check_one(address)
        if problem is not None:
            return problem
    lookup = {"email": "email", "sms": "phone", "whatsapp": "phone"}.get(channel)
    if lookup is not None and isinstance(address, str) and normalize(lookup, address) is None:
        return "not an e-mail address" if lookup == "email" else "not a phone number (E.164)"
    return None


class ActionError(Exception):
    """An action that cannot be done: a code (not_found, not_running, invalid,
    channel_unavailable, template_error) and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class TestSend:
    template: str
    channel: str
    address: str | dict[str, Any]
    user: str | None = None  # render with this user's stored data (as the preview does)
    rule: str | None = None  # with the trigger of this rule sending the template


def _detail(**items: Any) -> str:
    return json.dumps(items, ensure_ascii=False, sort_keys=True)


@dataclass
class Actions:
    store: Store
    clock: Clock
    config: Config
    processor: Processor
    rules: RuleManager
    dispatcher: Dispatcher | None
    tracker: Tracker | None = None  # the daemon's: a test's links work

    async def set_paused(
        self, who: str, rule_id: str, *, paused: bool, hold: bool = False
    ) -> RuleControl:
        """Pause (`hold`: its running instances wait too) or resume a rule, for every
        replica: they read the pauses from the store every few seconds; this one at once."""
        current = self.rules.current
        if rule_id not in current.rules and rule_id not in current.failed:
            raise ActionError("not_found", f"no rule '{rule_id}'")
        control = RuleControl(rule_id, paused, hold and paused, who, self.clock.now())
        action = "pause" if paused else "resume"
        await self.store.set_rule_control(control, action, _detail(hold=control.hold))
        await self.processor.refresh_controls(now=True)
        # Resumed: held timers past due fire now, held sends go out.
        self.processor.wake.set()
        if self.dispatcher is not None:
            self.dispatcher.wake.set()
        return control

    async def end_instance(self, who: str, instance_id: str) -> dict[str, Any]:
        """End a running instance (end reason ended_by_user): its timer and its sends not
        yet made are cancelled."""
        owner = await self.store.instance_owner(instance_id)
        if owner is None:
            raise ActionError("not_found", f"no instance '{instance_id}'")
        user_id, rule_id, _ = owner
        engine = self.processor.engine

        def end(ws: Workspace) -> bool:
            st = ws.users[user_id]
            inst = next((i for i in st.instances if i.id == instance_id), None)
            if inst is None or not inst.active:
                return False
            engine.end(ws, st, inst, "stopped", reason=ENDED_BY_USER)
            return True

        if not await self.processor.call([user_id], end):
            raise ActionError("not_running", f"instance '{instance_id}' has ended already")
        detail = _detail(instance=instance_id, user_id=user_id)
        # The rule is the target (its page lists the action); the instance is found too.
        await self.store.record_audit(
            AuditRow(self.clock.now(), who, "end_instance", rule_id, detail, instance_id)
        )
        return {
            "id": instance_id,
            "rule": rule_id,
            "user_id": user_id,
            "status": "stopped",
            "end_reason": ENDED_BY_USER,
        }

    async def test_send(self, who: str, req: TestSend) -> dict[str, Any]:
        """Render the template's channel as its page previews it (the sample data, or the
        chosen user's stored profile and last trigger event), mark it as a test, and send
        it through the channel's adapter to the address: recorded in the audit log only
        (no message row: it counts in no stats, funnel, holdout or metric of a rule). Its
        links are signed for the test's id: a click leads to its page, recording nothing;
        its unsubscribe link says it was a test."""
        ruleset = self.rules.current
        template = ruleset.templates.get(req.template)
        if template is None:
            raise ActionError("not_found", f"no template '{req.template}'")
        if req.channel not in template.blocks:
            have = ", ".join(sorted(template.blocks))
            raise ActionError(
                "invalid",
                f"channel: template '{req.template}' has no '{req.channel}' block (it has: {have})",
            )
        channels = self.dispatcher.channels if self.dispatcher is not None else {}
        channel = channels.get(req.channel)
        if channel is None:
            raise ActionError("channel_unavailable", f"channel '{req.channel}' is not configured")
        problem = address_problem(req.channel, req.address)
        if problem is not None:
            raise ActionError("invalid", f"address: {problem}")
        if req.user is not None:
            data = await user_input(
                self.store, self.clock, ruleset, req.template, req.user, req.rule
            )
            if data is None:
                raise ActionError("not_found", f"no user '{req.user}' (no profile is stored)")
        else:
            data = sample_input(ruleset, req.template, req.rule)
        message_id = f"{TEST_PREFIX}{secrets.token_hex(8)}"
        rendered = next(
            r
            for r in data.render(template, self.config, message_id=message_id, tracker=self.tracker)
            if r.channel == req.channel
        )
        if rendered.fields is None:
            raise ActionError("template_error", f"the template does not render: {rendered.error}")
        payload = mark_test(dict(rendered.fields))
        headers = {**(payload.pop("_headers", None) or {}), TEST_HEADER: "1"}
        message = OutboundMessage(
            id=message_id,
            channel=req.channel,
            user_id=TEST_USER,
            rule="test",
            category="test",
            addresses=[req.address],
            payload=payload,
            headers=dict(headers),
        )
        adapter = channel.channel
        try:
            # Within the channel's concurrency and rate, as the dispatcher's sends are.
            async with channel.semaphore:
                await channel.limiter.acquire()
                outcome = await asyncio.wait_for(
                    adapter.send(message), adapter.limits.timeout_s + 5.0
                )
        except Exception as exc:  # the adapter's own failure: the answer, never a 500
            outcome = Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
        result = {
            "id": message.id,
            "template": req.template,
            "channel": req.channel,
            "address": req.address,
            "user": req.user,
            "rule": req.rule,
            "outcome": outcome.kind,
            "provider_id": outcome.provider_id,
            "detail": outcome.detail,
        }
        await self.store.record_audit(
            AuditRow(self.clock.now(), who, "test_send", req.template, _detail(**result))
        )
        return result
