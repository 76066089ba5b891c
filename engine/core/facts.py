"""What user events change in the profile and the interest index."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from channels.kinds import kinds
from engine.clock import iso
from engine.core.addresses import addresses_of, touches_addresses
from engine.core.changes import Order, Touch
from engine.core.model import Message, UserState
from engine.core.workspace import Workspace
from engine.lang.events import Event

_MERGED = ("attributes", "consent")
# A shop that re-sends an order (a retry with a new event id) must not count it twice: the
# profile remembers its last order ids, the orders table's key is the backstop.
RECENT_ORDER_IDS = 50


# Profile keys of the shop's that are not addresses; the channel kinds name the rest.
_PROFILE_FIELDS = frozenset(
    {
        "timezone",
        "locale",
        "attributes",
        "consent",
        "rfm",  # a shop may supply its own segment; the nightly recompute overrides it
    }
)


def _address_keys() -> tuple[frozenset[str], dict[str, Callable[[Any], str]]]:
    """The top-level profile keys channel kinds read addresses from, and of those the lists
    (a user's devices, browsers) with what identifies an entry. From the registry each
    time: a kind may be registered at run time (a test's own)."""
    single: set[str] = set()
    lists: dict[str, Callable[[Any], str]] = {}
    for kind in kinds():
        for key in kind.profile_keys():
            if kind.many:
                lists[key] = kind.address_key
            else:
                single.add(key)
    return frozenset(single), lists


def apply_facts(ws: Workspace, st: UserState, ev: Event) -> None:
    """Update the profile's data and derived facts and the interest index from one event."""
    profile, data, uid = st.profile, ev.data, st.user_id
    etype = ev.type
    changed = st.profile_dirty
    if etype == "profile.updated":
        merge_profile(profile, data)
        changed = True
        if touches_addresses(data):
            ws.changes.addresses[uid] = addresses_of(profile)
    elif etype == "order.created":
        order = _order(ws, st, ev)
        if order is not None:
            ws.changes.orders.append(order)
            profile["orders_count"] = int(profile.get("orders_count", 0)) + 1
            if order.total:
                profile["revenue"] = round(float(profile.get("revenue", 0)) + order.total, 2)
            profile["last_order_at"] = ev.context["time"]
            changed = True
    elif etype == "cart.updated":
        ws.changes.reset_cart(uid)
        for item in data.get("items") or []:
            if isinstance(item, dict) and item.get("product_id") is not None:
                ws.changes.interest(str(item["product_id"]), "cart", uid, ws.now)
    elif etype == "cart.cleared":
        ws.changes.reset_cart(uid)
    elif etype == "product.viewed":
        ws.changes.interest(str(data["product_id"]), "viewed", uid, ws.now)
    elif etype in ("favorite.added", "favorite.removed"):
        _interest(ws, etype == "favorite.added", str(data["product_id"]), "favorite", uid)
    elif etype in ("product.subscribed", "product.unsubscribed"):
        _interest(ws, etype == "product.subscribed", str(data["product_id"]), data["kind"], uid)
    if etype.startswith("points.") or etype == "bonus.credited":
        balance = data.get("balance")
        if isinstance(balance, int | float):
            profile["points_balance"] = balance
            changed = True
    if changed:
        if not profile.get("created_at"):
            profile["created_at"] = ws.now
        profile["updated_at"] = ws.now
        st.profile_dirty = False
        ws.save_profile(st)


def _order(ws: Workspace, st: UserState, ev: Event) -> Order | None:
    """The order row of an order.created event, None when this order was counted before."""
    data, profile = ev.data, st.profile
    raw_id = data.get("order_id")
    known = profile.get("recent_order_ids")
    recent = [x for x in known if isinstance(x, str)] if isinstance(known, list) else []
    if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and raw_id != "":
        order_id = str(raw_id)
        if order_id in recent:
            return None
        profile["recent_order_ids"] = [*recent, order_id][-RECENT_ORDER_IDS:]
    elif ev.id is not None:
        order_id = f"event:{ev.id}"
    else:
        order_id = f"{iso(ws.now)}#{int(profile.get('orders_count', 0)) + 1}"
    raw_total = data.get("total")
    total = (
        round(float(raw_total), 2)
        if isinstance(raw_total, int | float)
        and not isinstance(raw_total, bool)
        and math.isfinite(raw_total)
        and raw_total >= 0
        else None
    )
    currency = data.get("currency")
    source = data.get("source")
    # An order dated in the future (a shop clock ahead of ours) counts as of now.
    at = min(ev.time, ws.now)
    return Order(
        user_id=st.user_id,
        order_id=order_id,
        at=at,
        total=total,
        currency=currency if isinstance(currency, str) else None,
        source="offline" if isinstance(source, str) and source.lower() == "offline" else "online",
        event_id=ev.id,
        touches=last_touches(st.messages, at),
    )


_TOUCH_TIME = {"click": "clicked_at", "open": "opened_at", "send": "sent_at"}


def last_touches(messages: list[Message], at: float) -> dict[str, Touch]:
    """The user's last clicked, opened and sent message at or before `at` (later wins ties).

    The daemon holds a user's messages of the last 30 days, which bounds the attribution
    window (policies.attribution.window).
    """
    out: dict[str, Touch] = {}
    for kind, attr in _TOUCH_TIME.items():
        best: Message | None = None
        best_at = -math.inf
        for m in messages:
            when = getattr(m, attr)
            if when is not None and best_at <= when <= at:
                best, best_at = m, when
        if best is not None:
            out[kind] = Touch(best.id, best_at, best.rule_id, best.step, best.channel, best.variant)
    return out


def _interest(ws: Workspace, add: bool, product_id: str, kind: str, uid: str) -> None:
    ws.changes.interest(product_id, kind, uid, ws.now if add else None)


def merge_profile(profile: dict[str, Any], data: dict[str, Any]) -> None:
    """Scalars replace, `attributes`/`consent` merge, device lists gain new entries.

    A null value removes the field. Invalid marks are per address, so a new address is
    usable at once while a dead one re-sent by the shop stays dead.
    """
    single, lists = _address_keys()
    for key, value in data.items():
        if key in _MERGED and isinstance(value, dict):
            target = profile.setdefault(key, {})
            for k, v in value.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        elif key in lists and isinstance(value, list):
            ident = lists[key]
            current = list(profile.get(key) or [])
            known = {ident(x) for x in current}
            for entry in value:
                if ident(entry) not in known:
                    current.append(entry)
                    known.add(ident(entry))
            profile[key] = current
        elif value is None:
            profile.pop(key, None)
        elif key in _PROFILE_FIELDS or key in single:
            profile[key] = value
        else:
            # Unknown top-level fields are the shop's own: keep them as attributes.
            profile.setdefault("attributes", {})[key] = value


def mark_invalid(st: UserState, channel: str, addresses: list[str]) -> None:
    invalid = st.profile.setdefault("invalid", {}).setdefault(channel, [])
    for address in addresses:
        if address not in invalid:
            invalid.append(address)
