"""SMS over a Twilio-compatible Messages API (plain aiohttp), plus the callback signature check."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ._common import check_keys, http_url, json_object, optional_text, snippet
from .base import Channel, Limits, OutboundMessage, Outcome

API_VERSION = "2010-04-01"
DEFAULT_BASE_URL = "https://api.twilio.com"
# Twilio Message resource, create: "Body ... up to 1,600 characters"
# (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).
MAX_BODY_CHARS = 1600
# Error codes (https://www.twilio.com/docs/api/errors/NNNNN), classified as in PROVIDERS.md.
_OPTED_OUT = 21610  # the recipient replied STOP
_DEAD_NUMBER = frozenset({21211, 21612, 21614})  # invalid To / not reachable by SMS / not mobile
_CONFIG = frozenset({20003, 21608})  # authentication / unverified number on a trial account
_THROTTLED = 20429
_KEYS = frozenset(
    {"base_url", "account_sid", "auth_token", "from", "messaging_service_sid", "status_callback"}
)


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    sender: str | None = None  # From: E.164 number or alphanumeric sender id
    messaging_service_sid: str | None = None
    status_callback: str | None = None

    @classmethod
    def parse(cls, name: str, keys: Mapping[str, Any]) -> TwilioConfig:
        """Validate `channels.NAME`; ValueError names the key and what was expected."""

        def where(key: str) -> str:
            return f"channels.{name}.{key}"

        check_keys(name, keys, _KEYS)
        values = {key: optional_text(keys, key, where) for key in _KEYS}
        for key in ("account_sid", "auth_token"):
            if values[key] is None:
                raise ValueError(f"{where(key)}: required")
        if ":" in str(values["account_sid"]):  # the Basic auth user name cannot hold one
            raise ValueError(f"{where('account_sid')}: must not contain ':'")
        sender, service = values["from"], values["messaging_service_sid"]
        if sender is None and service is None:
            raise ValueError(f"{where('from')}: required (or messaging_service_sid)")
        if sender is not None and service is not None:
            raise ValueError(f"{where('from')}: set either from or messaging_service_sid, not both")
        base_url = http_url(values["base_url"] or DEFAULT_BASE_URL, where("base_url"))
        callback = values["status_callback"]
        if callback is not None:
            callback = http_url(callback, where("status_callback"))
        return cls(
            account_sid=str(values["account_sid"]),
            auth_token=str(values["auth_token"]),
            base_url=base_url.rstrip("/"),
            sender=sender,
            messaging_service_sid=service,
            status_callback=callback,
        )


class TwilioChannel:
    provider = "twilio"

    def __init__(
        self,
        name: str,
        keys: Mapping[str, Any],
        limits: Limits | None,
        session: aiohttp.ClientSession,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.config = TwilioConfig.parse(name, keys)
        self._session = session
        c = self.config
        self._url = f"{c.base_url}/{API_VERSION}/Accounts/{c.account_sid}/Messages.json"
        # Built by hand: aiohttp.BasicAuth is deprecated in 3.14, encode_basic_auth is 3.14+.
        credentials = base64.b64encode(f"{c.account_sid}:{c.auth_token}".encode()).decode()
        self._headers = {"Accept": "application/json", "Authorization": f"Basic {credentials}"}

    def __repr__(self) -> str:
        c = self.config
        return f"TwilioChannel(name={self.name!r}, base_url={c.base_url!r}, sid={c.account_sid!r})"

    async def send(self, message: OutboundMessage) -> Outcome:
        if not message.addresses:
            return Outcome.reject_recipient("no address")
        to = str(message.addresses[0])
        text = message.payload.get("text")
        if not isinstance(text, str) or not text:
            return Outcome.reject_message("text is empty")
        if len(text) > MAX_BODY_CHARS:
            return Outcome.reject_message(f"text is {len(text)} characters, over {MAX_BODY_CHARS}")
        form = {"To": to, "Body": text}
        c = self.config
        if c.messaging_service_sid is not None:
            form["MessagingServiceSid"] = c.messaging_service_sid
        else:
            form["From"] = str(c.sender)
        if c.status_callback is not None:
            form["StatusCallback"] = c.status_callback
        try:
            async with self._session.post(
                self._url,
                data=form,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.limits.timeout_s),
                raise_for_status=False,  # whatever the shared session says: we classify
                allow_redirects=False,  # a redirect means a wrong base_url: say so, do not follow
            ) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError:
            return Outcome.retry(detail=f"timeout after {self.limits.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
        return classify(status, raw, retry_after, to)

    async def close(self) -> None:
        return None  # the HTTP session is shared and closed by its owner


def classify(status: int, raw: bytes, retry_after: str | None, to: str) -> Outcome:
    """One HTTP answer of the Messages API -> outcome (PROVIDERS.md)."""
    body = json_object(raw)
    if 200 <= status < 300:
        sid = body.get("sid") if body is not None else None
        if body is not None and isinstance(sid, str) and sid:
            return Outcome.accepted(sid, detail=str(body.get("status") or ""))
        # Sent or not, we cannot tell: retrying risks a duplicate, giving up risks a loss.
        return Outcome.retry(detail=f"malformed answer: HTTP {status} {snippet(raw)}")
    code = _code(body)
    if body is not None and code is not None:
        detail = f"HTTP {status} error {code}: {body.get('message', '')}"
    else:
        detail = f"HTTP {status}: {snippet(raw)}"
    if code == _OPTED_OUT:
        return Outcome.reject_recipient(detail, dead=(to,), opt_out=True)
    if code in _DEAD_NUMBER:
        return Outcome.reject_recipient(detail, dead=(to,))
    if code in _CONFIG or status == 401:
        return Outcome.config_error(detail)
    if code == _THROTTLED or status == 429 or status >= 500:
        return Outcome.retry(_seconds(retry_after), detail)
    if 300 <= status < 400:
        return Outcome.config_error(f"{detail} (redirected: check base_url)")
    return Outcome.reject_message(detail)


def verify_twilio_signature(
    auth_token: str, url: str, params: dict[str, str], signature: str
) -> bool:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the full URL + every param sorted, name+value."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.encode())


def _code(body: dict[str, Any] | None) -> int | None:
    value = body.get("code") if body is not None else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds (Twilio sends seconds); anything else is ignored."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    """Registry factory; `session` is the daemon's shared aiohttp.ClientSession."""
    return TwilioChannel(name, keys, limits, session)
