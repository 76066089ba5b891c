"""The dashboard's users page: find a user by id (exact or its start), email or phone, and
show their profile card (addresses and whether each can be sent to, consent, timezone,
locale, RFM, segments, interests, orders) and their timeline: what kaskad did and what the
user did (the event log), newest first. Every read is by an index (profiles' key, the
profile_addresses lookup, a user's rows), never a scan of profiles."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web

from channels.kinds import find_kind
from engine.api.admin import timeline
from engine.api.dashboard.auth import page
from engine.api.dashboard.render import html
from engine.api.state import STATE, AppState
from engine.core.addresses import search_keys
from engine.core.model import profile_context
from engine.core.reach import address_key
from engine.lang.events import MAX_ID_CHARS, text_problem
from engine.runtime.preview_data import load_profile as stored_profile

SIMILAR_LIMIT = 20
# The longest text the search box takes (an email may be longer than an id).
MAX_QUERY_CHARS = 320


async def load_profile(state: AppState, user_id: str) -> dict[str, Any] | None:
    """The user's stored profile, None when there is none (no events seen)."""
    return await stored_profile(state.store, state.clock, user_id)


async def search(state: AppState, query: str) -> tuple[str | None, list[dict[str, str]]]:
    """(the user to show, other matches as {user_id, why}): an id as it is, else the one
    profile holding the email or phone; several matches are listed, none shown."""
    store = state.store
    matches: dict[str, str] = {}
    exact = None
    if len(query) <= MAX_ID_CHARS:
        if await load_profile(state, query) is not None:
            exact = query
        for uid in await store.profile_ids(query, SIMILAR_LIMIT):
            if uid.startswith(query):
                matches[uid] = "id starts with it"
    for kind, key in search_keys(query):
        for uid in await store.find_users(kind, key, SIMILAR_LIMIT):
            matches.setdefault(uid, f"{kind} {key}")
    if exact is None:
        by_address = [u for u, why in matches.items() if not why.startswith("id ")]
        if len(by_address) == 1:
            exact = by_address[0]
    matches.pop(exact or "", None)
    return exact, [{"user_id": u, "why": w} for u, w in sorted(matches.items())]


def channel_rows(state: AppState, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Per channel: each address and whether it can be sent to (valid, invalid with the
    problem, marked invalid by a provider), or missing; and the consent given."""
    rows = []
    invalid_marks = profile.get("invalid") or {}
    consent = profile.get("consent") or {}
    for channel in sorted(state.config.channels):
        kind = find_kind(channel)
        if kind is None or not kind.address_from:
            continue
        addresses = []
        for address in kind.addresses(profile):
            problem = kind.check_one(address)
            if problem:
                status = f"invalid: {problem}"
            elif address_key(address, channel) in set(invalid_marks.get(channel) or ()):
                status = "suppressed: a provider refused it (bounced or unknown)"
            else:
                status = "valid"
            shown = address_key(address, channel)
            addresses.append({"address": shown, "status": status, "ok": status == "valid"})
        given = consent.get(channel)
        if not kind.needs_consent:
            consent_text = "not needed"
        elif given is True:
            consent_text = "given"
        elif given is False:
            consent_text = "withdrawn (unsubscribed)"
        else:
            consent_text = "not stated"
        rows.append(
            {
                "channel": channel,
                "addresses": addresses,
                "missing": not addresses,
                "consent": consent_text,
                "where": ", ".join(kind.address_from),
            }
        )
    return rows


def _revenue(orders: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Revenue per currency of the orders listed (no currency: "")."""
    sums: dict[str, float] = defaultdict(float)
    for o in orders:
        if isinstance(o.get("total"), int | float):
            sums[o.get("currency") or ""] += float(o["total"])
    return sorted(sums.items())


def card(state: AppState, profile: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """What the profile card shows."""
    view = profile_context(profile)
    interests = view.get("interests") or {}
    return {
        "channels": channel_rows(state, profile),
        "timezone": view.get("timezone"),
        "locale": view.get("locale"),
        "rfm": view.get("rfm"),
        "rfm_scores": profile.get("rfm_scores"),
        "segments": [s for s in view.get("segments") or [] if isinstance(s, str)],
        "interests": {
            k: v for k, v in (interests.items() if isinstance(interests, dict) else []) if v
        },
        "orders_count": view.get("orders_count"),
        "revenue_total": view.get("revenue"),
        "revenue": _revenue(found["orders"]),
        "orders_listed": len(found["orders"]),
        "last_order_at": view.get("last_order_at"),
        "points_balance": view.get("points_balance"),
        "created_at": profile.get("created_at"),
        "updated_at": profile.get("updated_at"),
        "attributes": view.get("attributes") or {},
    }


@page
async def users_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query.get("q", "").strip()
    problem = text_problem(query)
    if problem is None and len(query) > MAX_QUERY_CHARS:
        problem = f"must be at most {MAX_QUERY_CHARS} characters"
    if problem is not None:
        return html(
            request,
            "users.html",
            400,
            q="",
            notice=f"q {problem}",
            user=None,
            similar=[],
        )
    user_id, similar = (None, []) if not query else await search(state, query)
    found: dict[str, Any] | None = None
    profile_card = None
    items: list[dict[str, Any]] = []
    if user_id is None and query and len(query) <= MAX_ID_CHARS:
        # No profile, but kaskad may have acted for this id (an erased user's history).
        found = await timeline(state.store, query, state.config.policies.attribution)
        if found["timeline"] or found["events"]:
            user_id = query
        else:
            found = None
    if user_id is not None:
        if found is None:
            found = await timeline(state.store, user_id, state.config.policies.attribution)
        profile = await load_profile(state, user_id)
        if profile is not None:
            profile_card = card(state, profile, found)
        # Newest first; at one time what kaskad did (the effects) above the user's events.
        items = [{**e, "kind": "event"} for e in found["events"]] + found["timeline"]
        items.sort(key=lambda x: (x["time"] or "", x["kind"] != "event"), reverse=True)
    return html(
        request,
        "users.html",
        q=query,
        notice=None,
        user=user_id,
        found=found,
        card=profile_card,
        items=items,
        similar=similar,
    )
