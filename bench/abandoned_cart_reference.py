"""Independent reference for the abandoned-cart rule: what it should send, in plain Python.

No engine code on purpose: benchmarks and replay tests compare the engine's sends with this.

The rule:

* trigger: ``cart.updated`` with ``total > 0``; every such event restarts the chain;
* step 1: 15 minutes after the last cart activity, one email, unless the user placed an order
  (``order.created``) or cleared the cart (``cart.cleared``) in between;
* step 2: 1 day after step 1, a second email if there is still no order. Only an order cancels
  this step: the rule's wording ("if still no order") does not make a clear cancel it.

Timing conventions: events at the very instant a send is due are handled first (an order at
the due instant cancels the send, a cart update at that instant restarts the chain instead).
Events with an ``id`` seen before are ignored (the engine deduplicates by id). A
``cart.updated`` with ``total == 0`` does not match the trigger, so it neither starts nor
restarts the chain (nor cancels it). Events without ``user_id`` (product events) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

Send = tuple[str, str, int]  # (due time, ISO 8601 UTC with Z; user_id; step 1 or 2)
_Pending = tuple[datetime, int] | None  # the user's next due send: (due, step)
_UserEvent = tuple[datetime, str, Mapping[str, Any]]  # (time, type, data)

DEFAULT_HORIZON_AFTER_LAST_EVENT = timedelta(days=400)


def expected_sends(
    events: Iterable[Mapping[str, Any]],
    *,
    first_delay_s: int = 900,
    second_delay_s: int = 86400,
    horizon: datetime | None = None,
) -> list[Send]:
    """Every send due at or before ``horizon`` (default: last event + 400 days), sorted."""
    timelines = _user_timelines(events)
    if not timelines:
        return []
    if horizon is None:
        last = max(timeline[-1][0] for timeline in timelines.values())
        horizon = last + DEFAULT_HORIZON_AFTER_LAST_EVENT
    elif horizon.tzinfo is None:
        horizon = horizon.replace(tzinfo=UTC)
    delays = (timedelta(seconds=first_delay_s), timedelta(seconds=second_delay_s))
    sends: list[Send] = []
    for user_id, timeline in timelines.items():
        sends.extend(_user_sends(user_id, timeline, delays, horizon))
    return sorted(sends)


def _user_timelines(events: Iterable[Mapping[str, Any]]) -> dict[str, list[_UserEvent]]:
    """Per user, the distinct events in time order (ties keep input order)."""
    seen_ids: set[str] = set()
    timelines: dict[str, list[_UserEvent]] = {}
    for event in events:
        event_id = event.get("id")
        if event_id is not None:
            if event_id in seen_ids:
                continue
            seen_ids.add(event_id)
        user_id = event.get("user_id")
        if user_id is None:
            continue
        entry = (_parse_time(event["time"]), event["type"], event.get("data") or {})
        timelines.setdefault(user_id, []).append(entry)
    for timeline in timelines.values():
        timeline.sort(key=lambda entry: entry[0])  # stable: same-instant events keep input order
    return timelines


def _user_sends(
    user_id: str,
    timeline: list[_UserEvent],
    delays: tuple[timedelta, timedelta],
    horizon: datetime,
) -> list[Send]:
    sends: list[Send] = []
    pending: _Pending = None
    for at, event_type, data in timeline:
        # Strictly before: a send due at this very instant waits until the event is handled.
        pending = _fire_due(pending, at, False, user_id, delays, sends)
        pending = _apply(pending, at, event_type, data, delays[0])
    _fire_due(pending, horizon, True, user_id, delays, sends)
    return sends


def _fire_due(
    pending: _Pending,
    until: datetime,
    inclusive: bool,
    user_id: str,
    delays: tuple[timedelta, timedelta],
    sends: list[Send],
) -> _Pending:
    """Send what is due before (or at, if inclusive) ``until``; step 1 schedules step 2.

    Returns what is still pending.
    """
    while pending is not None and (pending[0] < until or (inclusive and pending[0] == until)):
        due, step = pending
        sends.append((_iso(due), user_id, step))
        pending = (due + delays[1], 2) if step == 1 else None
    return pending


def _apply(
    pending: _Pending,
    at: datetime,
    event_type: str,
    data: Mapping[str, Any],
    first_delay: timedelta,
) -> _Pending:
    if event_type == "cart.updated" and float(data.get("total") or 0) > 0:
        return (at + first_delay, 1)  # trigger, or restart from step 1
    if event_type == "order.created":
        return None
    if event_type == "cart.cleared" and pending is not None and pending[1] == 1:
        return None
    return pending


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)  # Python 3.11 accepts the trailing Z
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
