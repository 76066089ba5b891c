"""GET/POST /v1/callbacks/{channel}: delivery and read receipts from providers.

Not behind the admin or ingest auth (providers cannot send those): each provider's
signature is the auth. Receipts become message.* events matched by the provider's id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from channels.sms import verify_twilio_signature
from channels.whatsapp import parse_statuses, verify_signature, verify_subscription
from engine.api.body import read_form
from engine.api.errors import error
from engine.api.params import read_json
from engine.api.reactions import erased, reaction, record
from engine.api.state import STATE, AppState
from engine.core.model import Message
from engine.errors import EventError
from engine.lang.events import check_id

log = structlog.get_logger("kaskad.callbacks")

# Provider status -> event; statuses missing here ("sent", "queued", ...) add nothing.
_WHATSAPP_EVENTS = {
    "delivered": "message.delivered",
    "read": "message.opened",
    "failed": "message.failed",
}
_TWILIO_EVENTS = {
    "delivered": "message.delivered",
    "read": "message.opened",
    "undelivered": "message.failed",
    "failed": "message.failed",
}


@dataclass(frozen=True, slots=True)
class _Receipt:
    channel: str
    provider_id: str
    status: str
    type: str
    when: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        prefix = "wa" if self.channel == "whatsapp" else self.channel
        return f"{prefix}:{self.provider_id}:{self.status}"


def _secret(state: AppState, channel: str, provider: str, key: str) -> str | None:
    """A key of a channel configured with this provider, or None (sandbox, unset)."""
    cfg = state.config.channels.get(channel)
    if cfg is None or cfg.provider != provider:
        return None
    value = (cfg.model_extra or {}).get(key)
    return value if isinstance(value, str) and value else None


def _not_configured(channel: str, provider: str, key: str) -> web.Response:
    return error(
        404,
        "not_configured",
        f"channels.{channel} is not set up for callbacks: needs provider {provider} and {key}",
    )


async def _record(state: AppState, receipts: list[_Receipt]) -> web.Response | None:
    """Store the receipts of known messages; an error answer when the store failed."""
    messages: dict[str, Message | None] = {}
    gone: dict[str, bool] = {}
    events: list[dict[str, Any]] = []
    # A provider id no store could hold (NUL, over the id limit) names no message of ours:
    # dropped here, before a lookup that PostgreSQL would refuse.
    receipts = [r for r in receipts if _id_ok(r.provider_id)]
    try:
        for r in receipts:
            if r.provider_id not in messages:
                messages[r.provider_id] = await state.store.message_by_provider_id(r.provider_id)
            message = messages[r.provider_id]
            if message is not None and message.user_id not in gone:
                gone[message.user_id] = await erased(state, message.user_id)
            if message is None or gone[message.user_id]:
                log.info(
                    "callback.unknown_message",
                    channel=r.channel,
                    provider_id=r.provider_id,
                    status=r.status,
                    erased=message is not None,
                )
                continue
            events.append(
                reaction(r.type, message, r.provider_id, r.event_id, when=r.when, **r.data)
            )
        await record(state, events)
    except Exception as exc:
        log.error("callback.store_failed", error=repr(exc))
        # The provider retries; the event ids make the retry count once.
        return error(
            503,
            "store_unavailable",
            "receipts could not be stored; retry",
            headers={"Retry-After": "5"},
        )
    return None


def _id_ok(provider_id: str) -> bool:
    try:
        check_id(provider_id, "provider_id")
    except EventError:
        log.info("callback.invalid_id", provider_id=provider_id[:80])
        return False
    return True


async def _whatsapp_verify(request: web.Request) -> web.StreamResponse:
    token = _secret(request.app[STATE], "whatsapp", "cloud_api", "verify_token")
    if token is None:
        return _not_configured("whatsapp", "cloud_api", "verify_token")
    challenge = verify_subscription(request.query, token)
    if challenge is None:
        return error(403, "forbidden", "hub.mode must be subscribe and hub.verify_token match")
    return web.Response(text=challenge, content_type="text/plain")


async def _whatsapp_statuses(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    app_secret = _secret(state, "whatsapp", "cloud_api", "app_secret")
    if app_secret is None:
        return _not_configured("whatsapp", "cloud_api", "app_secret")
    body = await request.read()
    signature = request.headers.get("X-Hub-Signature-256", "")
    # A hex digest is ASCII; other header bytes arrive as surrogate escapes, unencodable.
    if not signature.isascii() or not verify_signature(app_secret, body, signature):
        return error(
            401, "unauthorized", "X-Hub-Signature-256 is missing or does not match the body"
        )
    try:
        value = read_json(body)
    except ValueError as exc:
        return error(400, "malformed", str(exc))
    receipts = [
        _Receipt(
            "whatsapp",
            s.wamid,
            s.status,
            _WHATSAPP_EVENTS[s.status],
            s.timestamp,
            {"error": s.error} if s.error else {},
        )
        for s in parse_statuses(value)
        if s.status in _WHATSAPP_EVENTS
    ]
    failed = await _record(state, receipts)
    return failed or web.json_response({"ok": True})


async def _twilio_status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    auth_token = _secret(state, "sms", "twilio", "auth_token")
    if auth_token is None:
        return _not_configured("sms", "twilio", "auth_token")
    signature = request.headers.get("X-Twilio-Signature", "")
    form = await read_form(request)
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    if not signature.isascii():  # base64 is ASCII; other bytes would not even encode
        return error(403, "forbidden", "X-Twilio-Signature is missing or does not match")
    # Twilio signs the URL it called: the public one, since the daemon may sit behind a proxy.
    urls = [state.config.tracking.base_url.rstrip("/") + request.raw_path]
    callback = _secret(state, "sms", "twilio", "status_callback")
    if callback is not None:
        urls.append(callback)
    if not signature or not any(
        verify_twilio_signature(auth_token, url, params, signature) for url in urls
    ):
        return error(403, "forbidden", "X-Twilio-Signature is missing or does not match")
    status, sid = params.get("MessageStatus", ""), params.get("MessageSid", "")
    etype = _TWILIO_EVENTS.get(status)
    if etype is not None and sid:
        data = {"error_code": params["ErrorCode"]} if params.get("ErrorCode") else {}
        failed = await _record(state, [_Receipt("sms", sid, status, etype, data=data)])
        if failed is not None:
            return failed
    return web.Response(text="")  # Twilio reads only the status; text/plain as documented


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_GET: dict[str, Handler] = {"whatsapp": _whatsapp_verify}
_POST: dict[str, Handler] = {"whatsapp": _whatsapp_statuses, "sms": _twilio_status}


async def _dispatch(request: web.Request, table: dict[str, Handler]) -> web.StreamResponse:
    channel = request.match_info["channel"]
    handler = table.get(channel)
    if handler is None:
        return error(
            404,
            "not_found",
            f"no {request.method} callbacks for channel '{channel}'",
            {"channels": sorted(table)},
        )
    return await handler(request)


async def get_callback(request: web.Request) -> web.StreamResponse:
    return await _dispatch(request, _GET)


async def post_callback(request: web.Request) -> web.StreamResponse:
    return await _dispatch(request, _POST)
