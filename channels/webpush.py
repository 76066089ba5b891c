"""Web push (RFC 8030): aes128gcm payloads (RFC 8291) signed with VAPID (RFC 8292)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import http_ece
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException

from ._common import (
    NETWORK_ERRORS,
    HttpChannel,
    http_session,
    retry_after_s,
    ttl_s,
)
from .base import Channel, Limits, OutboundMessage, Outcome
from .push import combine

log = structlog.get_logger("kaskad.channels.webpush")

# RFC 8291 section 4: one 4096-byte record less the 86-byte header, 16-byte tag and delimiter.
MAX_PLAINTEXT_BYTES = 3993
VAPID_LIFETIME_S = 12 * 3600  # RFC 8292 allows up to 24 h
VAPID_RENEW_BEFORE_S = 3600
DEFAULT_TTL_S = 86400
URGENCIES = ("very-low", "low", "normal", "high")  # RFC 8030 section 5.3

_KEYS = frozenset({"vapid_private_key", "vapid_subject", "ttl_s", "urgency"})
_MAX_ORIGINS = 256  # a handful of push services in practice; bound the cache anyway


@dataclass(frozen=True, slots=True)
class _Subscription:
    endpoint: str
    origin: str
    p256dh: bytes
    auth: bytes


class WebPushChannel(HttpChannel):
    """Web push on a shared aiohttp session; addresses are browser PushSubscription objects."""

    provider = "vapid"
    _log = log
    keys = _KEYS

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        session: aiohttp.ClientSession,
        limits: Limits | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, config, session, limits)
        self._now = now
        self._vapid = Vapid02(
            private_key=_vapid_key(config.get("vapid_private_key"), name),
            conf={"no-strict": True},  # the subject is checked below, py_vapid's regex is narrow
        )
        subject = config.get("vapid_subject")
        if not isinstance(subject, str) or not subject.startswith(("mailto:", "https:")):
            raise ValueError(f"channels.{name}.vapid_subject: required, a mailto: or https: URI")
        self.subject = subject
        self._ttl_s = ttl_s(name, config.get("ttl_s", DEFAULT_TTL_S))
        urgency = config.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            raise ValueError(f"channels.{name}.urgency: expected one of {', '.join(URGENCIES)}")
        self._urgency: str | None = urgency
        self._vapid_headers: dict[str, tuple[str, float]] = {}  # origin -> (header, renew_at)

    def __repr__(self) -> str:
        return f"<WebPushChannel {self.name!r} subject={self.subject!r}>"

    async def close(self) -> None:
        self._vapid_headers.clear()  # the session is shared: its owner closes it

    async def _send(self, message: OutboundMessage) -> Outcome:
        content = {k: v for k, v in message.payload.items() if v is not None}
        content.setdefault("message_id", message.id)  # the service worker reports opens with it
        plaintext = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            return Outcome.reject_message(
                f"payload is {len(plaintext)} bytes, over {MAX_PLAINTEXT_BYTES}"
            )
        if not message.addresses:
            return Outcome.reject_recipient("no subscription")
        results: list[tuple[str, Outcome]] = []
        seen: set[str] = set()
        for address in message.addresses:
            key = _address_key(address)
            if key in seen:
                continue
            seen.add(key)
            sub = _subscription(address)
            if isinstance(sub, str):
                results.append((key, Outcome.reject_recipient(sub, dead=(key,))))
                continue
            outcome = await self._send_one(sub, plaintext)
            results.append((key, outcome))
            if outcome.kind in ("config_error", "reject_message"):
                break  # the next subscription would get the same answer
        return combine(results)

    async def _send_one(self, sub: _Subscription, plaintext: bytes) -> Outcome:
        try:
            authorization = self._vapid_header(sub.origin)
        except VapidException:
            return Outcome.reject_recipient(
                "endpoint origin unusable as VAPID aud", dead=(sub.endpoint,)
            )
        body = http_ece.encrypt(
            plaintext,
            private_key=ec.generate_private_key(ec.SECP256R1()),  # fresh for every message
            dh=sub.p256dh,
            auth_secret=sub.auth,
            version="aes128gcm",
        )
        headers = {
            "TTL": str(self._ttl_s),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": authorization,
        }
        if self._urgency:
            headers["Urgency"] = self._urgency
        try:
            async with self._session.post(
                sub.endpoint,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status, location = resp.status, resp.headers.get("Location")
                after_s = retry_after_s(resp.headers.get("Retry-After"), self._now())
        except NETWORK_ERRORS as exc:
            return Outcome.retry(detail=f"network error: {type(exc).__name__}")
        if 200 <= status < 300:
            return Outcome.accepted(location or sub.endpoint)
        detail = f"{status} {raw[:200].decode('utf-8', 'replace')}".strip()
        if status in (404, 410):
            return Outcome.reject_recipient(detail, dead=(sub.endpoint,))
        if status == 413:
            return Outcome.reject_message(detail)
        if status in (408, 429) or status >= 500 or status < 400:
            return Outcome.retry(after_s, detail)
        if status in (401, 403):
            return Outcome.config_error(detail)  # VAPID key refused or subscription not ours
        return Outcome.reject_message(detail)

    def _vapid_header(self, origin: str) -> str:
        """One signed VAPID header per push service origin, renewed an hour before it expires."""
        now = self._now()
        cached = self._vapid_headers.get(origin)
        if cached is not None and now < cached[1]:
            return cached[0]
        exp = int(now) + VAPID_LIFETIME_S
        claims = {"aud": origin, "exp": exp, "sub": self.subject}
        header = str(self._vapid.sign(claims)["Authorization"])
        if len(self._vapid_headers) >= _MAX_ORIGINS:
            self._vapid_headers.clear()
        self._vapid_headers[origin] = (header, exp - VAPID_RENEW_BEFORE_S)
        return header


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    return WebPushChannel(name, keys, http_session(name, "vapid", session), limits)


def _vapid_key(value: Any, name: str) -> ec.EllipticCurvePrivateKey:
    where = f"channels.{name}.vapid_private_key"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: required")
    key: Any = None
    try:
        if "-----BEGIN" in value:
            key = serialization.load_pem_private_key(value.strip().encode(), password=None)
        else:
            raw = b64url_decode(value)
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:  # py-vapid also writes base64 DER
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{where}: expected a base64url raw P-256 key (32 bytes) or a PEM key")
    return key


def _subscription(address: Any) -> _Subscription | str:
    """The usable subscription, or why it can never receive a push."""
    if not isinstance(address, Mapping):
        return "not a subscription object"
    endpoint, keys = address.get("endpoint"), address.get("keys")
    bad_endpoint = "subscription endpoint is not an http(s) URL"
    if not isinstance(endpoint, str):
        return bad_endpoint
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return bad_endpoint
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return bad_endpoint
    if not isinstance(keys, Mapping):
        return "subscription has no keys"
    try:
        p256dh = b64url_decode(str(keys.get("p256dh") or ""))
        auth = b64url_decode(str(keys.get("auth") or ""))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except (ValueError, TypeError):
        return "subscription keys are not base64url, or p256dh is not a P-256 point"
    if len(p256dh) != 65 or len(auth) != 16:
        return "subscription keys are not a 65-byte p256dh and a 16-byte auth"
    try:
        port = parts.port
    except ValueError:
        return "subscription endpoint has a bad port"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = 443 if parts.scheme == "https" else 80
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")
    return _Subscription(endpoint, origin, p256dh, auth)


def _address_key(address: Any) -> str:
    """As the engine keys addresses: a subscription by its endpoint."""
    return str(address.get("endpoint")) if isinstance(address, Mapping) else str(address)


def b64url_decode(value: str) -> bytes:
    """Base64url with or without padding (browsers omit it; some libraries use +/)."""
    text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
