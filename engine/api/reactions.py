"""Reactions to sent messages (pixel, click, unsubscribe, provider receipts) as inbox events.

They take the same road as ingested events: durably stored, de-duplicated by id, then
processed by the engine loop, where the runner finds the message and resumes the cascades
awaiting it.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from ..clock import iso
from ..errors import EventError
from ..events import parse_event
from ..model import Message
from .state import AppState

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
    now = state.clock.now()
    rows: list[tuple[str | None, str]] = []
    for obj in events:
        try:
            event = parse_event(obj, received_at=now)
        except EventError as exc:  # e.g. a provider id too long for an event id
            log.warning("reaction.invalid", type=obj.get("type"), field=exc.field, error=str(exc))
            continue
        body = json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False)
        rows.append((event.id, body))
    if not rows:
        return 0
    accepted, duplicates = await state.store.enqueue(rows, now)
    state.processor.note_enqueued(accepted)
    state.processor.wake.set()
    state.metrics.accepted.inc(accepted)
    state.metrics.duplicates.inc(duplicates)
    return accepted
