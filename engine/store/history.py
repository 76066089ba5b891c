"""A message's history (the message_events rows): what changed between its stored row and
the one a unit of work saves, as (message id, time, status, detail) rows. Both stores write
these in the transaction that writes the message.

The dispatcher's own steps (claimed: `sending`; requeued after an error: `retry`) are
written by the queue methods that make them; everything the engine decides (queued or
skipped at creation, the provider's answer applied: `sent` or `failed`, reactions:
`delivered`, `opened`, `clicked`, a cancel) comes from the diff here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core.model import Message

# (message id, at, status, detail)
EventRow = tuple[str, float, str, str | None]
# The stored columns a diff needs, in this order after the id.
OLD_COLUMNS = ("status", "sent_at", "delivered_at", "opened_at", "clicked_at")
OldRow = Sequence[Any]  # (status, sent_at, delivered_at, opened_at, clicked_at)

# Lifecycle order: events at one instant are shown in it (a click implies the open and the
# delivery at the same time; a synchronous answer is queued and sent at once).
EVENT_ORDER = (
    "queued",
    "skipped",
    "sending",
    "retry",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "cancelled",
)
RANK = {name: i for i, name in enumerate(EVENT_ORDER)}
_REACTIONS = (("delivered_at", "delivered"), ("opened_at", "opened"), ("clicked_at", "clicked"))
_DETAIL_CHARS = 1000


def _detail(*parts: str | None) -> str | None:
    text = ": ".join(p for p in parts if p)
    return text[:_DETAIL_CHARS] or None


def events_of(old: OldRow | None, m: Message, now: float | None) -> list[EventRow]:
    """The history rows of saving `m` over its stored row `old` (None: a new message), at
    `now` (the unit of work's time; the message's own times where it has them)."""
    at = now if now is not None else max(m.created_at, m.sent_at or 0.0)
    rows: list[EventRow] = []
    if old is None:
        if m.status == "skipped":
            rows.append((m.id, m.created_at, "skipped", _detail(m.reason, m.detail)))
            return rows
        # A new message's reason while queued is its deferral (quiet hours); a final one
        # (an answer in the same unit) goes with that answer.
        rows.append((m.id, m.created_at, "queued", m.reason if m.status == "queued" else None))
        old = ("queued", None, None, None, None)
    status, sent_at = old[0], old[1]
    if m.sent_at is not None and sent_at is None:
        provider = f"provider id {m.provider_id}" if m.provider_id else None
        rows.append((m.id, m.sent_at, "sent", provider))
    for i, (column, name) in enumerate(_REACTIONS, start=2):
        value = getattr(m, column)
        if value is not None and old[i] is None:
            rows.append((m.id, value, name, None))
    if m.status != status and m.status in ("failed", "cancelled", "skipped"):
        rows.append((m.id, at, m.status, _detail(m.reason, m.detail)))
    return rows


def retry_detail(detail: str, attempts: int) -> str | None:
    return _detail(f"attempt {attempts}" if attempts else "channel paused", detail)


def sort_events(rows: list[tuple[float, str, str | None]]) -> list[tuple[float, str, str | None]]:
    """A message's history in order: by time, then by lifecycle at one instant."""
    return sorted(rows, key=lambda r: (r[0], RANK.get(r[1], len(RANK))))


def implied_events(m: Message) -> list[tuple[float, str, str | None]]:
    """The history a message without stored events (written before they were kept) shows:
    what its own times say."""
    rows = [(at, status, detail) for _, at, status, detail in events_of(None, m, None)]
    if m.status in ("failed", "cancelled") and not any(r[1] == m.status for r in rows):
        rows.append((m.sent_at or m.created_at, m.status, _detail(m.reason, m.detail)))
    return sort_events(rows)
