"""One message as the admin API and the dashboard show it: what was sent (the rendered
content kept in `payload`, exactly as the provider got it), where its tracking links lead
(our signed tokens decoded), its recipient, provider id and every status change.

The recipient is shown in full: these views are for admins, who read the same addresses in
the profile (GET /v1/profiles); only the logs, which leave the system, mask addresses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from channels.kinds import find_kind
from engine.clock import iso
from engine.core.model import Message
from engine.core.tracking import KIND_OF_LETTER, Tracker, read_token
from engine.store.base import Store
from engine.store.history import implied_events

# A link of ours: any origin (tracking.base_url may have changed since), then /t/<kind>/<token>.
_TOKEN_URL = re.compile(r"https?://[^\s\"'<>]+?/t/([cou])/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
# What the dashboard's rendered view loads instead of the open pixel: nothing (a view by an
# admin is no open).
BLANK_IMAGE = "data:,"


@dataclass(frozen=True, slots=True)
class Link:
    url: str  # as sent
    kind: str  # click | open | unsubscribe
    destination: str | None  # a click's URL; None for the others or an unreadable token
    verified: bool  # signed with the current tracking secret
    field: str  # the content field it is in

    def json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "destination": self.destination,
            "verified": self.verified,
            "field": self.field,
        }


def _texts(value: Any, path: str) -> list[tuple[str, str]]:
    """(field path, text) of every string in a payload value."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _texts(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _texts(v, f"{path}[{i}]")]
    return []


def tracked_links(payload: dict[str, Any] | None, tracker: Tracker | None) -> list[Link]:
    """Our tracking links in the content, each once, in the order they appear."""
    links: dict[str, Link] = {}
    for field, text in _texts(payload or {}, ""):
        for match in _TOKEN_URL.finditer(text):
            url, letter, token = match.group(0), match.group(1), match.group(2)
            if url in links:
                continue
            kind = KIND_OF_LETTER[letter]
            signed = tracker.verify(kind, token) if tracker is not None else None
            data = signed if signed is not None else read_token(token)
            if data is None or data.get("k") != letter:
                continue
            destination = data.get("u") if kind == "click" else None
            links[url] = Link(
                url=url,
                kind=kind,
                destination=destination if isinstance(destination, str) else None,
                verified=signed is not None,
                field=field,
            )
    return list(links.values())


def with_destinations(text: str, links: list[Link]) -> str:
    """The content with each click link replaced by where it leads and the open pixel by a
    blank image: the dashboard's rendered view neither counts as an open nor a click."""
    for link in links:
        if link.destination is not None:
            text = text.replace(link.url, link.destination)
        elif link.kind == "open":
            text = text.replace(link.url, BLANK_IMAGE)
    return text


def content_fields(m: Message, links: list[Link]) -> list[dict[str, Any]]:
    """The rendered content, field by field: its text as sent, whether it is HTML, and (for
    HTML) the text to render with link destinations."""
    kind = find_kind(m.channel or "")
    out = []
    for key, value in (m.payload or {}).items():
        if key == "_headers":
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
        is_html = kind is not None and key in kind.fields and kind.fields[key].kind == "html"
        out.append(
            {
                "key": key,
                "text": text,
                "html": is_html,
                "rendered": with_destinations(text, links) if is_html else None,
            }
        )
    return out


def _t(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def message_json(m: Message) -> dict[str, Any]:
    """A message as GET /v1/messages lists it (SPEC 9)."""
    return {
        "id": m.id,
        "rule": m.rule_id,
        "user_id": m.user_id,
        "step": m.step,
        "channel": m.channel,
        "template": m.template,
        "variant": m.variant,
        "status": m.status,
        "reason": m.reason,
        "detail": m.detail,
        "created_at": _t(m.created_at),
        "sent_at": _t(m.sent_at),
        "delivered_at": _t(m.delivered_at),
        "opened_at": _t(m.opened_at),
        "clicked_at": _t(m.clicked_at),
        "provider_id": m.provider_id,
        "attempts": m.attempts,
    }


async def message_detail(store: Store, m: Message, tracker: Tracker | None) -> dict[str, Any]:
    """Everything about one message: the list's fields, then its instance, recipient,
    content, headers, tracking links and history (`history_source`: "recorded", or
    "implied" from the message's own times when it predates the history)."""
    history = await store.message_history(m.id)
    source = "recorded"
    if not history:
        history, source = implied_events(m), "implied"
    links = tracked_links(m.payload, tracker)
    payload = m.payload or {}
    headers = payload.get("_headers")
    return {
        **message_json(m),
        "instance_id": m.instance_id or None,
        "category": m.category,
        "recipient": m.recipient,
        "next_attempt_at": _t(m.next_attempt_at) if m.status == "queued" else None,
        "content": {k: v for k, v in payload.items() if k != "_headers"},
        "headers": headers if isinstance(headers, dict) else {},
        "links": [link.json() for link in links],
        "history": [{"at": iso(at), "status": s, "detail": d} for at, s, d in history],
        "history_source": source,
    }
