"""Our own signed JSON POST, signed the Standard Webhooks way (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from ._common import check_keys, http_url, snippet
from .base import Channel, Limits, OutboundMessage, Outcome

SECRET_PREFIX = "whsec_"
# Standard Webhooks verifiers reject timestamps further than this from their clock.
TOLERANCE_S = 5 * 60
_RETRY_STATUSES = frozenset({408, 429})
_KEYS = frozenset({"url", "secret", "headers"})
# Set by the adapter on every request; a configured header must not replace them.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp"}
    | {"webhook-signature", "idempotency-key"}
)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    key: bytes = field(repr=False)  # the base64-decoded part of "whsec_..."
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, keys: Mapping[str, Any]) -> WebhookConfig:
        """Validate `channels.NAME`; ValueError names the key and what was expected."""

        def where(key: str) -> str:
            return f"channels.{name}.{key}"

        check_keys(name, keys, _KEYS)
        url = keys.get("url")
        if not url:
            raise ValueError(f"{where('url')}: required")
        url = http_url(url, where("url"))
        secret = keys.get("secret")
        if not secret:
            raise ValueError(f"{where('secret')}: required")
        try:
            key = secret_key(str(secret))
        except ValueError as exc:
            raise ValueError(f"{where('secret')}: {exc}") from None
        headers = keys.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError(f"{where('headers')}: expected a mapping of header names to text")
        for header, value in headers.items():
            if not isinstance(header, str) or not isinstance(value, str | int | float):
                raise ValueError(f"{where('headers')}.{header}: expected text")
            if header.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{where('headers')}.{header}: set by kaskad, cannot be replaced")
        return cls(url=str(url), key=key, headers={str(k): str(v) for k, v in headers.items()})


class WebhookChannel:
    provider = "webhook"

    def __init__(
        self,
        name: str,
        keys: Mapping[str, Any],
        limits: Limits | None,
        session: aiohttp.ClientSession,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.config = WebhookConfig.parse(name, keys)
        self._session = session
        self._now = now

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, url={self.config.url!r})"

    async def send(self, message: OutboundMessage) -> Outcome:
        template_body = message.payload.get("body")
        if not isinstance(template_body, Mapping):
            return Outcome.reject_message("webhook.body must be a mapping")
        # Ours last: a template key of the same name must not hide which message this is.
        document = {
            **template_body,
            "message_id": message.id,
            "rule": message.rule,
            "user_id": message.user_id,
        }
        try:
            body = json.dumps(
                document, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
        except (TypeError, ValueError) as exc:
            return Outcome.reject_message(f"body is not JSON: {exc}")
        timestamp = str(int(self._now()))
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "webhook-id": message.id,
            # The same on every attempt of this message, from any replica: a receiver that
            # honours it (the IETF Idempotency-Key draft, Standard Webhooks' webhook-id)
            # drops a repeat after a crash or a replica taking over a send.
            "Idempotency-Key": message.id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + sign(self.config.key, message.id, timestamp, body),
        }
        try:
            async with self._session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.limits.timeout_s),
                raise_for_status=False,  # whatever the shared session says: we classify
                allow_redirects=False,  # re-posting a signed body elsewhere is not our call
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
                location = response.headers.get("Location", "")
        except TimeoutError:
            return Outcome.retry(detail=f"timeout after {self.limits.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
        detail = f"HTTP {status}: {snippet(raw)}"
        if 200 <= status < 300:
            return Outcome.accepted(message.id, detail=f"HTTP {status}")
        if status == 410:
            return Outcome.config_error(f"endpoint gone ({detail})")
        if status in _RETRY_STATUSES or status >= 500:
            return Outcome.retry(self._retry_after_s(retry_after), detail)
        if 300 <= status < 400:
            return Outcome.config_error(f"redirected to {location or '?'}: update the url")
        return Outcome.reject_message(detail)

    def _retry_after_s(self, value: str | None) -> float | None:
        """Retry-After as delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
        if value is None:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - self._now())

    async def close(self) -> None:
        return None  # the HTTP session is shared and closed by its owner


def secret_key(secret: str) -> bytes:
    """The HMAC key in a "whsec_<base64>" secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"expected '{SECRET_PREFIX}' followed by base64")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError(f"expected '{SECRET_PREFIX}' followed by base64") from None
    if not key:
        raise ValueError("the key after 'whsec_' is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """base64 HMAC-SHA256 over "{id}.{timestamp}.{body}"."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_webhook_signature(
    secret: str,
    msg_id: str,
    timestamp: str | int,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """True when one of the header's space-separated "v1,<sig>" entries matches.

    With `now`, a timestamp further than `tolerance_s` away also fails (replay protection).
    """
    if now is not None:
        try:
            if abs(now - int(timestamp)) > tolerance_s:
                return False
        except ValueError:
            return False
    expected = sign(secret_key(secret), msg_id, str(timestamp), body).encode()
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    """Registry factory; `session` is the daemon's shared aiohttp.ClientSession."""
    return WebhookChannel(name, keys, limits, session)
