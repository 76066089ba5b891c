"""What a reaction to a message (delivered, opened, clicked, failed, unsubscribed) records on
the message and the profile; the runner then moves on the instances awaiting it."""

from __future__ import annotations

from typing import Any

from engine.core.model import Message, UserState
from engine.core.workspace import Workspace
from engine.lang.events import Event

_REACTION_FIELD = {
    "message.delivered": "delivered_at",
    "message.opened": "opened_at",
    "message.clicked": "clicked_at",
}
_WITH_DISPATCHER = frozenset({"queued", "sending", "answered"})
_STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4}


def record_reaction(ws: Workspace, st: UserState, ev: Event) -> Message | None:
    """Record a message.* event on the message it names; that message, or None."""
    message = find_message(st, ev.data)
    if message is None:
        channel = ev.data.get("channel")
        if ev.type == "message.unsubscribed" and isinstance(channel, str):
            # An old message (not loaded) still unsubscribes: consent is what matters.
            st.profile.setdefault("consent", {})[channel] = False
            ws.save_profile(st)
        return None
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
        code = ev.data.get("error_code")
        # What the message's history shows: a bounce after the provider took it.
        message.detail = "failed by the provider's receipt" + (
            f" (error {code})" if isinstance(code, str | int) else ""
        )
    ws.save_message(message)
    return message


def find_message(st: UserState, data: dict[str, Any]) -> Message | None:
    """The message a reaction names: by id (ours or the provider's), else the user's latest
    of that rule on that channel."""
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
