"""A user's own events (the per-user event log) as the timeline API and the dashboard show
them: time, type, id, a one-line summary a marketer reads, and the data kept."""

from __future__ import annotations

from typing import Any

from engine.clock import iso
from engine.store.base import Store
from engine.store.user_log import LoggedEvent

SUMMARY_CHARS = 160


def _money(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"


def _with_currency(data: dict[str, Any], key: str) -> str:
    currency = data.get("currency")
    shown = _money(data.get(key))
    return f"{shown} {currency}" if isinstance(currency, str) and currency else shown


def _product(data: dict[str, Any]) -> str:
    name, pid = data.get("name"), data.get("product_id")
    text = str(name) if name else str(pid or "a product")
    if name and pid:
        text += f" ({pid})"
    if "price" in data:
        text += f", {_with_currency(data, 'price')}"
    return text


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def summary(etype: str, data: dict[str, Any] | None) -> str:
    """One line about an event: what was viewed, carted, ordered, searched, changed."""
    if data is None:
        return "(data too big to keep)"
    items = data.get("items")
    n_items = len(items) if isinstance(items, list) else 0
    if etype in ("product.viewed", "favorite.added", "favorite.removed"):
        text = _product(data)
    elif etype == "cart.updated":
        text = f"{_items(n_items)}, total {_with_currency(data, 'total')}"
    elif etype == "order.created":
        text = f"order {data.get('order_id', '?')}: "
        text += f"{_items(n_items)}, " if isinstance(items, list) else ""
        text += f"total {_with_currency(data, 'total')}"
    elif etype == "search.performed":
        text = f"searched {str(data.get('query', ''))!r}"
        if "results" in data:
            text += f", {data['results']} results"
    elif etype == "profile.updated":
        text = "set " + ", ".join(sorted(data)) if data else "no change"
    elif etype.startswith("message."):
        parts = [str(data[k]) for k in ("rule", "channel", "message_id") if data.get(k)]
        text = " ".join(parts)
    else:
        parts = [
            f"{k}={v}"
            for k, v in data.items()
            if isinstance(v, str | int | float) and not isinstance(v, bool)
        ]
        text = ", ".join(parts[:4])
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def event_json(e: LoggedEvent) -> dict[str, Any]:
    return {
        "time": iso(e.at),
        "type": e.type,
        "event_id": e.event_id,
        "summary": summary(e.type, e.data),
        "data": e.data,
    }


async def events_of(store: Store, user_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The user's logged events, newest first, as JSON."""
    return [event_json(e) for e in await store.user_events(user_id, limit=limit)]
