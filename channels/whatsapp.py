"""WhatsApp Cloud API template messages, and the pure parts of its status webhooks."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import structlog

from ._common import (
    NETWORK_ERRORS,
    HttpChannel,
    base_url,
    http_session,
    parse_json,
    seconds,
)
from .base import Channel, Limits, OutboundMessage, Outcome

log = structlog.get_logger("kaskad.channels.whatsapp")

_KEYS = frozenset(
    {"base_url", "api_version", "phone_number_id", "access_token", "app_secret", "verify_token"}
)

# Cloud API error codes (PROVIDERS.md); 200-299 are API permission errors.
_REJECT_RECIPIENT = frozenset({131026})  # not a WhatsApp user, or old client: fall back
_OPT_OUT = frozenset({131050})  # the user stopped marketing messages
_REJECT_MESSAGE = frozenset({131047, 132000, 132001, 131008, 131009, 100, 131051})
_RETRY = frozenset({130429, 131056, 131049, 131000, 1, 2})
_CONFIG = frozenset({190, 10, 131031, 131042, 131048, 368, 4, 80007, *range(200, 300)})

ReceiptStatus = Literal["sent", "delivered", "read", "failed"]
_STATUSES: dict[Any, ReceiptStatus] = {s: s for s in ("sent", "delivered", "read", "failed")}


@dataclass(frozen=True, slots=True)
class Receipt:
    """One entry of a status webhook: what happened to a message we sent."""

    wamid: str
    status: ReceiptStatus
    timestamp: float
    recipient_id: str | None
    error: str | None


class WhatsAppChannel(HttpChannel):
    """Cloud API on a shared aiohttp session; the address is a phone number (E.164)."""

    provider = "cloud_api"
    _log = log
    keys = _KEYS

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        session: aiohttp.ClientSession,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(name, config, session, limits)
        base = base_url(
            config.get("base_url") or "https://graph.facebook.com", f"channels.{name}.base_url"
        )
        version = config.get("api_version") or "v21.0"
        if not isinstance(version, str) or not re.fullmatch(r"v\d+\.\d+", version):
            raise ValueError(f"channels.{name}.api_version: expected like 'v21.0', got {version!r}")
        phone_number_id = config.get("phone_number_id")
        if isinstance(phone_number_id, int) and not isinstance(phone_number_id, bool):
            phone_number_id = str(phone_number_id)  # YAML reads an unquoted id as a number
        if not phone_number_id:
            raise ValueError(f"channels.{name}.phone_number_id: required")
        if not isinstance(phone_number_id, str) or not phone_number_id.isdigit():
            raise ValueError(f"channels.{name}.phone_number_id: expected digits")
        self.phone_number_id = phone_number_id
        self._access_token = _secret(config, "access_token", name, required=True)
        self._app_secret = _secret(config, "app_secret", name)
        self._verify_token = _secret(config, "verify_token", name)
        self.base_url = base
        self._url = f"{self.base_url}/{version}/{quote(phone_number_id)}/messages"

    def __repr__(self) -> str:
        return f"<WhatsAppChannel {self.name!r} url={self._url!r}>"

    def verify_signature(self, raw_body: bytes, header: str | None) -> bool:
        """Whether a status webhook POST was signed with this channel's app secret."""
        return verify_signature(self._app_secret, raw_body, header)

    def verify_subscription(self, params: Mapping[str, str]) -> str | None:
        """The challenge to echo for a genuine webhook verification GET, else None."""
        return verify_subscription(params, self._verify_token)

    async def _send(self, message: OutboundMessage) -> Outcome:
        # One phone per user: reach.addresses yields at most one.
        address = message.addresses[0] if message.addresses else ""
        to = "".join(c for c in str(address) if c in "0123456789")
        if not 7 <= len(to) <= 15:  # E.164: at most 15 digits
            return Outcome.reject_recipient("not a phone number")
        try:
            template = _template(message.payload)
        except ValueError as exc:
            return Outcome.reject_message(str(exc))
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }
        headers = {"Authorization": f"Bearer {self._access_token}"}
        try:
            async with self._session.post(
                self._url, json=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status, raw = resp.status, await resp.read()
                after_s = seconds(resp.headers.get("Retry-After"))
        except NETWORK_ERRORS as exc:
            return Outcome.retry(detail=f"network error: {type(exc).__name__}")
        return _classify(status, parse_json(raw), after_s)


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    return WhatsAppChannel(name, keys, http_session(name, "cloud_api", session), limits)


def verify_signature(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    given = header.removeprefix("sha256=").strip().lower()
    return hmac.compare_digest(expected.encode(), given.encode())


def verify_subscription(params: Mapping[str, str], verify_token: str) -> str | None:
    """hub.challenge when hub.mode is subscribe and hub.verify_token matches, else None."""
    given = params.get("hub.verify_token")
    if params.get("hub.mode") != "subscribe" or not verify_token or not isinstance(given, str):
        return None
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    challenge = params.get("hub.challenge")
    return challenge if isinstance(challenge, str) else None


def parse_statuses(body: Any) -> list[Receipt]:
    """Every well-formed status in a webhook body; malformed parts are skipped, never raised."""
    receipts: list[Receipt] = []
    for change in _dicts(body, "entry", "changes"):
        value = change.get("value")
        statuses = value.get("statuses") if isinstance(value, dict) else None
        for item in statuses if isinstance(statuses, list) else ():
            receipt = _receipt(item)
            if receipt is not None:
                receipts.append(receipt)
    return receipts


def _dicts(body: Any, outer: str, inner: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    entries = body.get(outer) if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        items = entry.get(inner) if isinstance(entry, dict) else None
        found.extend(i for i in (items if isinstance(items, list) else ()) if isinstance(i, dict))
    return found


def _receipt(item: Any) -> Receipt | None:
    if not isinstance(item, dict):
        return None
    wamid = item.get("id")
    raw_status = item.get("status")
    status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if not isinstance(wamid, str) or not wamid or status is None:
        return None
    timestamp = seconds(item.get("timestamp"))
    if timestamp is None:
        return None
    recipient = item.get("recipient_id")
    error = None
    errors = item.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        text = first.get("title") or first.get("message") or ""
        error = f"{first.get('code', '?')}: {text}".rstrip(": ")
    return Receipt(
        wamid=wamid,
        status=status,
        timestamp=timestamp,
        recipient_id=str(recipient) if isinstance(recipient, str | int) else None,
        error=error,
    )


def _template(payload: Mapping[str, Any]) -> dict[str, Any]:
    name, language = payload.get("name"), payload.get("language")
    if not isinstance(name, str) or not name:
        raise ValueError("template name is empty")
    if not isinstance(language, str) or not language:
        raise ValueError("template language is empty")
    params = payload.get("params") or []
    if not isinstance(params, list):
        raise ValueError("template params must be a list")
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    if params:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": str(p)} for p in params]}
        ]
    return template


def _classify(status: int, answer: Any, after_s: float | None) -> Outcome:
    if 200 <= status < 300:
        messages = answer.get("messages") if isinstance(answer, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if isinstance(wamid, str) and wamid:
            return Outcome.accepted(wamid)
        return Outcome.retry(detail="malformed answer")
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    text = " ".join(str(t) for t in (error.get("message"), details) if t)[:300]
    detail = f"{status} {code if code is not None else ''} {text}".replace("  ", " ").strip()
    if status >= 500:
        return Outcome.retry(after_s, detail)  # whatever the code says, the server is failing
    if code in _REJECT_RECIPIENT:
        return Outcome.reject_recipient(detail)
    if code in _OPT_OUT:
        return Outcome.reject_recipient(detail, opt_out=True)
    if code in _REJECT_MESSAGE:
        return Outcome.reject_message(detail)
    if code in _RETRY or status in (408, 429) or status < 400:
        return Outcome.retry(after_s, detail)
    if code in _CONFIG or status in (401, 403, 404):
        return Outcome.config_error(detail)
    return Outcome.reject_message(detail)


def _secret(config: Mapping[str, Any], key: str, name: str, required: bool = False) -> str:
    value = config.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"channels.{name}.{key}: required")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"channels.{name}.{key}: expected a string")
    return value
