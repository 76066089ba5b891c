"""Reactions to sent messages (pixel, click, unsubscribe, provider receipts) as inbox events.

They take the same road as ingested events: durably stored, de-duplicated by id, then
processed by the engine loop, where the runner finds the message and resumes the cascades
awaiting it.
"""

from __future__ import annotations

from typing import Any

import structlog

from engine.api.state import AppState
from engine.clock import iso
from engine.core.model import Message

log = structlog.get_logger("kaskad.reactions")


def reaction(
    etype: str,
    message: Message,
    message_id: str,
    event_id: str | None,
    *,
    when: float | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A message.* event for the owner of `message`; `message_id` is what the runner matches
    (kaskad's id, or the provider's id for receipts)."""
    event: dict[str, Any] = {
        "type": etype,
        "user_id": message.user_id,
        "data": {"message_id": message_id, **data},
    }
    if event_id is not None:
        event["id"] = event_id
    if when is not None:
        event["time"] = iso(when)
    return event


async def erased(state: AppState, user_id: str) -> bool:
    """Whether the user's profile is gone: a reaction must not bring an erased user back."""
    now = state.clock.now()
    # Bounds in the future: only the profile row is wanted, not the history.
    users = await state.store.load_users([user_id], messages_since=now + 1, starts_since=now + 1)
    return users[user_id].profile_dirty


async def record(state: AppState, events: list[dict[str, Any]]) -> int:
    """Store the events in the inbox and wake the engine; how many were new.

    Raises whatever the store raises: the caller decides what the sender is told.
    """
    return await state.intake.accept_events(events)
