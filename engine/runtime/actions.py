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
from engine.clock import Clock
from engine.core.preview import SAMPLE_FACTS, SAMPLE_USER, render_channels, sample_trigger
from engine.core.workspace import Workspace
from engine.lang.config import Config
from engine.store.base import Store
from engine.store.controls import AuditRow, RuleControl

if TYPE_CHECKING:
    from engine.runtime.dispatch import Dispatcher
    from engine.runtime.processor import Processor
    from engine.runtime.reload import RuleManager

ENDED_BY_USER = "ended_by_user"  # the end reason of an instance ended by hand
TEST_USER = "test-send"  # the user id a test send is rendered for


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
        """Render the template's channel with the sample data, and send it through the
        channel's adapter to the address: a test, recorded in the audit log only (no
        message row: it counts in no stats, funnel, holdout or metric of a rule)."""
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
        sample = sample_trigger(ruleset, req.template, TEST_USER)
        user = {**SAMPLE_USER, "user_id": TEST_USER}
        rendered = next(
            r
            for r in render_channels(template, user, sample.trigger, self.config, SAMPLE_FACTS)
            if r.channel == req.channel
        )
        if rendered.fields is None:
            raise ActionError("template_error", f"the template does not render: {rendered.error}")
        payload = dict(rendered.fields)
        headers = payload.pop("_headers", None) or {}
        message = OutboundMessage(
            id=f"test-{secrets.token_hex(8)}",
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
            "outcome": outcome.kind,
            "provider_id": outcome.provider_id,
            "detail": outcome.detail,
        }
        await self.store.record_audit(
            AuditRow(self.clock.now(), who, "test_send", req.template, _detail(**result))
        )
        return result
