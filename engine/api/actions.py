"""Actions by hand (issue 13), shared by the API and the dashboard's forms: pause and
resume a rule, end a running instance, send a test of a template. Each is recorded in the
audit log with who (the account's name) and when."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any

from channels.base import OutboundMessage, Outcome
from engine.api.state import AppState
from engine.clock import iso
from engine.core.preview import SAMPLE_FACTS, SAMPLE_USER, render_channels, sample_trigger
from engine.core.workspace import Workspace
from engine.store.controls import AuditRow, RuleControl

ENDED_BY_USER = "ended_by_user"  # the end reason of an instance ended by hand
TEST_USER = "test-send"  # the user id a test send is made for
_MAX_ADDRESS = 2000


class ActionError(Exception):
    """An action that cannot be done: the HTTP status, a code and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _detail(**items: Any) -> str:
    return json.dumps(items, ensure_ascii=False, sort_keys=True)


def control_json(control: RuleControl | None) -> dict[str, Any]:
    if control is None:
        return {"paused": False, "hold": False, "by": None, "at": None}
    return {
        "paused": control.paused,
        "hold": control.hold,
        "by": control.by,
        "at": iso(control.at),
    }


def audit_json(row: AuditRow) -> dict[str, Any]:
    try:
        detail = json.loads(row.detail)
    except ValueError:
        detail = row.detail
    return {
        "at": iso(row.at),
        "who": row.who,
        "action": row.action,
        "target": row.target,
        "detail": detail,
    }


def _known_rule(state: AppState, rule_id: str) -> None:
    rules = state.rules.current
    if rule_id not in rules.rules and rule_id not in rules.failed:
        raise ActionError(404, "not_found", f"no rule '{rule_id}'")


async def set_paused(
    state: AppState, who: str, rule_id: str, *, paused: bool, hold: bool = False
) -> RuleControl:
    """Pause (`hold`: its running instances wait too) or resume a rule, for every replica:
    they read the pauses from the store every few seconds; this one at once."""
    _known_rule(state, rule_id)
    control = RuleControl(rule_id, paused, hold and paused, who, state.clock.now())
    action = "pause" if paused else "resume"
    await state.store.set_rule_control(control, action, _detail(hold=control.hold))
    await state.processor.refresh_controls(now=True)
    # Resumed: held timers past due fire now, held sends go out.
    state.processor.wake.set()
    if state.dispatcher is not None:
        state.dispatcher.wake.set()
    return control


async def end_instance(state: AppState, who: str, instance_id: str) -> dict[str, Any]:
    """End a running instance (end reason ended_by_user): its timer and its sends not yet
    made are cancelled."""
    owner = await state.store.instance_owner(instance_id)
    if owner is None:
        raise ActionError(404, "not_found", f"no instance '{instance_id}'")
    user_id, rule_id, _ = owner
    engine = state.processor.engine

    def end(ws: Workspace) -> bool:
        st = ws.users[user_id]
        inst = next((i for i in st.instances if i.id == instance_id), None)
        if inst is None or not inst.active:
            return False
        engine.end(ws, st, inst, "stopped", reason=ENDED_BY_USER)
        return True

    if not await state.processor.call([user_id], end):
        raise ActionError(409, "not_running", f"instance '{instance_id}' has ended already")
    await state.store.record_audit(
        AuditRow(
            state.clock.now(),
            who,
            "end_instance",
            rule_id,
            _detail(instance=instance_id, user_id=user_id),
        )
    )
    return {
        "id": instance_id,
        "rule": rule_id,
        "user_id": user_id,
        "status": "stopped",
        "end_reason": ENDED_BY_USER,
    }


@dataclass(frozen=True, slots=True)
class TestSend:
    template: str
    channel: str
    address: str | dict[str, Any]


def parse_test_send(data: Any) -> TestSend:
    """The body of POST /v1/test-sends; ActionError 400 naming the field."""
    if not isinstance(data, dict):
        raise ActionError(400, "invalid_body", "the body must be a JSON object")
    for key in ("template", "channel"):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise ActionError(400, "invalid_body", f"{key}: must be a name (a non-empty string)")
    address = data.get("address")
    if isinstance(address, str):
        address = address.strip()
    if not address or not isinstance(address, str | dict):
        raise ActionError(
            400,
            "invalid_body",
            "address: must be the address to send to (a string, or a web push subscription object)",
        )
    if len(json.dumps(address)) > _MAX_ADDRESS:
        raise ActionError(400, "invalid_body", f"address: longer than {_MAX_ADDRESS} characters")
    unknown = sorted(set(data) - {"template", "channel", "address"})
    if unknown:
        raise ActionError(400, "invalid_body", f"{unknown[0]}: unknown field")
    return TestSend(data["template"], data["channel"], address)


async def test_send(state: AppState, who: str, req: TestSend) -> dict[str, Any]:
    """Render the template's channel with the sample data, and send it through the
    channel's adapter to the address: a test, recorded in the audit log only (no message
    row: it counts in no stats, funnel, holdout or metric of a rule)."""
    ruleset = state.rules.current
    template = ruleset.templates.get(req.template)
    if template is None:
        raise ActionError(404, "not_found", f"no template '{req.template}'")
    if req.channel not in template.blocks:
        have = ", ".join(sorted(template.blocks))
        raise ActionError(
            400,
            "invalid_body",
            f"channel: template '{req.template}' has no '{req.channel}' block (it has: {have})",
        )
    channels = state.dispatcher.channels if state.dispatcher is not None else {}
    channel = channels.get(req.channel)
    if channel is None:
        raise ActionError(409, "channel_unavailable", f"channel '{req.channel}' is not configured")
    sample = sample_trigger(ruleset, req.template, TEST_USER)
    user = {**SAMPLE_USER, "user_id": TEST_USER}
    rendered = next(
        r
        for r in render_channels(template, user, sample.trigger, state.config, SAMPLE_FACTS)
        if r.channel == req.channel
    )
    if rendered.fields is None:
        raise ActionError(422, "template_error", f"the template does not render: {rendered.error}")
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
            outcome = await asyncio.wait_for(adapter.send(message), adapter.limits.timeout_s + 5.0)
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
    await state.store.record_audit(
        AuditRow(state.clock.now(), who, "test_send", req.template, _detail(**result))
    )
    return result
