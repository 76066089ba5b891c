"""GET /t/o (open pixel), GET /t/c (click redirect), GET or POST /t/u (one-click unsubscribe).

Tokens are signed by engine.tracking.Tracker. A bad token records nothing: the pixel still
answers its GIF (mail clients show nothing broken), a click or unsubscribe link 404s.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web

from engine.api.errors import error
from engine.api.reactions import erased, reaction, record
from engine.api.state import STATE, AppState
from engine.core.model import Message
from engine.runtime.actions import TEST_PREFIX

log = structlog.get_logger("kaskad.tracking")

# The classic 1x1 GIF89a, its one pixel transparent (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store"}
# Reserved and unreserved URL characters, and '%': a signed URL passes through unchanged
# unless it holds characters a Location header cannot carry.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def _payload(state: AppState, kind: str, token: str) -> dict[str, Any] | None:
    payload = state.tracker.verify(kind, token) if state.tracker is not None else None
    if payload is None or not isinstance(payload.get("m"), str):
        log.warning("tracking.invalid_token", kind=kind, reason="bad_signature")
        return None
    return payload


async def _message(state: AppState, kind: str, message_id: str) -> tuple[Message | None, str]:
    """The message a genuine token names, unless it is unknown or its user was erased."""
    message = await state.store.message(message_id)
    if message is None:
        log.warning(
            "tracking.invalid_token", kind=kind, reason="unknown_message", message=message_id
        )
        return None, "unknown_message"
    if await erased(state, message.user_id):
        log.warning("tracking.invalid_token", kind=kind, reason="erased_user", message=message_id)
        return None, "erased_user"
    return message, ""


async def open_pixel(request: web.Request) -> web.Response:
    state = request.app[STATE]
    payload = _payload(state, "open", request.match_info["token"])
    if payload is not None and request.method == "GET":
        mid = payload["m"]
        try:
            message, _ = await _message(state, "open", mid)
            if message is not None:
                # One id per message: repeated fetches of the pixel count once.
                await record(state, [reaction("message.opened", message, mid, f"open:{mid}")])
        except Exception as exc:  # the reader sees an image whatever happens
            log.error("tracking.store_failed", kind="open", error=repr(exc))
    return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)


async def click(request: web.Request) -> web.Response:
    state = request.app[STATE]
    payload = _payload(state, "click", request.match_info["token"])
    url = payload.get("u") if payload is not None else None
    if payload is None or not isinstance(url, str):
        return error(404, "not_found", "this link is not valid")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        log.warning("tracking.invalid_token", kind="click", reason="not_http")
        return error(404, "not_found", "this link does not lead to a web page")
    if request.method == "GET":
        mid = payload["m"]
        url_hash = hashlib.sha1(url.encode()).hexdigest()[:12]
        try:
            message, _ = await _message(state, "click", mid)
            if message is not None:
                event = reaction(
                    "message.clicked", message, mid, f"click:{mid}:{url_hash}", url=url
                )
                await record(state, [event])
        except Exception as exc:  # the reader still gets where the link leads
            log.error("tracking.store_failed", kind="click", error=repr(exc))
    location = quote(url, safe=_URL_SAFE)
    return web.Response(status=302, headers={**NO_STORE, "Location": location})


def _page(title: str, text: str, form: bool = False, status: int = 200) -> web.Response:
    button = (
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if form
        else ""
    )
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>\n"
        '<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto">'
        f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{button}</body></html>\n"
    )
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


def _is_test(payload: dict[str, Any]) -> bool:
    """A test send's link (runtime/actions.py): genuine, but of no user's message."""
    return str(payload["m"]).startswith(TEST_PREFIX)


def _test_page() -> web.Response:
    return _page(
        "A test message",
        "This link came in a test send from the dashboard: there is nothing to unsubscribe "
        "from, and nothing was changed.",
    )


def _what(channel: Any) -> str:
    return "e-mails" if channel == "email" else f"{channel} messages"


async def unsubscribe_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    payload = _payload(state, "unsubscribe", request.match_info["token"])
    if payload is None:
        return error(404, "not_found", "this unsubscribe link is not valid")
    if _is_test(payload):
        return _test_page()
    # A GET changes nothing: link scanners fetch it; only the form's POST unsubscribes.
    return _page(
        "Unsubscribe",
        f"Stop receiving marketing {_what(payload.get('c'))} from us?",
        form=True,
    )


async def unsubscribe(request: web.Request) -> web.Response:
    """RFC 8058 one-click POST (body List-Unsubscribe=One-Click), or the page's form."""
    state = request.app[STATE]
    payload = _payload(state, "unsubscribe", request.match_info["token"])
    if payload is None:
        return error(404, "not_found", "this unsubscribe link is not valid")
    if _is_test(payload):
        return _test_page()
    mid, channel = payload["m"], payload.get("c")
    try:
        message, why = await _message(state, "unsubscribe", mid)
        if message is None and why == "unknown_message":
            return error(404, "unknown_message", "this unsubscribe link has expired")
        if message is not None:
            # No event id: unsubscribing again after re-subscribing must work again.
            await record(
                state,
                [reaction("message.unsubscribed", message, mid, None, channel=channel)],
            )
    except Exception as exc:
        log.error("tracking.store_failed", kind="unsubscribe", error=repr(exc))
        return error(
            503, "store_unavailable", "please try again in a minute", headers={"Retry-After": "5"}
        )
    log.info("tracking.unsubscribed", message=mid, channel=channel)
    return _page("Unsubscribed", f"You will no longer receive marketing {_what(channel)} from us.")
