"""What both stores share about the user search index and the per-user event log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.changes import UserEvent
from engine.store.rows import dumps, stored_json

# Each user's newest events kept (older ones are trimmed as new ones are written), and the
# most JSON of an event's data kept with it (a bigger event is logged without its data).
USER_EVENTS_KEEP = 200
EVENT_DATA_MAX = 8 * 1024


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event of a user's log, newest first when read."""

    at: float
    type: str
    event_id: str | None
    data: dict[str, Any] | None  # None: too big to keep


def event_row(e: UserEvent) -> tuple[str, float, str, str | None, str | None]:
    """(user_id, at, type, event_id, data JSON or None) of an event to log."""
    data = dumps(e.data)
    if data is not None and len(data) > EVENT_DATA_MAX:
        data = None
    return e.user_id, e.at, e.type, e.event_id, data


def logged(row: Any) -> LoggedEvent:
    """A LoggedEvent from (at, type, event_id, data) read back."""
    at, etype, event_id, data = row
    value = stored_json(data) if data is not None else None
    return LoggedEvent(float(at), etype, event_id, value if isinstance(value, dict) else None)
