"""Mobile push through FCM HTTP v1: a service-account OAuth token, one POST per device token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._common import (
    NETWORK_ERRORS,
    HttpChannel,
    base_url,
    http_session,
    parse_json,
    ttl_s,
)
from ._common import retry_after_s as retry_after_s  # re-exported: channels.push.retry_after_s
from .base import Channel, Limits, OutboundMessage, Outcome

log = structlog.get_logger("kaskad.channels.push")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_PAYLOAD_BYTES = 4096  # FCM HTTP v1: notification + data, see PROVIDERS.md
ASSERTION_LIFETIME_S = 3600  # Google refuses assertions valid for longer than an hour
REFRESH_EARLY_S = 300  # renew the access token five minutes before it expires
DEFAULT_TTL_S = 86400

_KEYS = frozenset({"base_url", "project_id", "service_account_file", "service_account", "ttl_s"})
_DEAD_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRY_CODES = frozenset(
    {"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "UNSPECIFIED_ERROR"}
)
# UNAUTHENTICATED lands here only after one refresh and one retry have failed.
_CONFIG_CODES = frozenset(
    {"THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"}
)
_INVALID_TOKEN_TEXT = "not a valid fcm registration token"


class _Failed(Exception):
    """A call that ended without a usable answer, carried as its outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any  # parsed JSON, None when the body is not JSON
    retry_after: str | None


class FcmChannel(HttpChannel):
    """FCM HTTP v1 on a shared aiohttp session; addresses are FCM registration tokens."""

    provider = "fcm"
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
        account, where = _service_account(name, config)
        self._client_email = _account_str(account, "client_email", where)
        self._token_uri = base_url(_account_str(account, "token_uri", where), f"{where}.token_uri")
        self._key_id = account.get("private_key_id")
        self._private_key = _rsa_key(_account_str(account, "private_key", where), where)
        project = config.get("project_id") or account.get("project_id")
        if not isinstance(project, str) or not project:
            raise ValueError(f"channels.{name}.project_id: required")
        self.project_id = project
        base = base_url(
            config.get("base_url") or "https://fcm.googleapis.com", f"channels.{name}.base_url"
        )
        self._send_url = f"{base}/v1/projects/{quote(project, safe='')}/messages:send"
        self._ttl_s = ttl_s(name, config.get("ttl_s", DEFAULT_TTL_S))
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<FcmChannel {self.name!r} project={self.project_id!r} url={self._send_url!r}>"

    async def close(self) -> None:
        self._token = None  # the session is shared: its owner closes it

    async def _send(self, message: OutboundMessage) -> Outcome:
        try:
            fcm_message = _fcm_message(message, self._ttl_s)
        except ValueError as exc:
            return Outcome.reject_message(str(exc))
        tokens = list(dict.fromkeys(a for a in message.addresses if isinstance(a, str) and a))
        malformed = tuple(str(a) for a in message.addresses if not isinstance(a, str) or not a)
        results: list[tuple[str, Outcome]] = [
            (a, Outcome.reject_recipient("not an FCM token", dead=(a,))) for a in malformed
        ]
        if not results and not tokens:
            return Outcome.reject_recipient("no device token")
        for token in tokens:
            outcome = await self._send_one(token, fcm_message)
            results.append((token, outcome))
            if outcome.kind in ("config_error", "reject_message"):
                break  # the next device would get the same answer
        return combine(results)

    async def _send_one(self, token: str, fcm_message: dict[str, Any]) -> Outcome:
        body = {"message": {"token": token, **fcm_message}}
        try:
            access_token = await self._access_token(None)
            reply = await self._post(self._send_url, json=body, headers=_bearer(access_token))
            if _error_code(reply) == "UNAUTHENTICATED":
                # Expired or revoked before its time: refresh once and call once more.
                access_token = await self._access_token(stale=access_token)
                reply = await self._post(self._send_url, json=body, headers=_bearer(access_token))
        except _Failed as failed:
            return failed.outcome
        return self._classify(token, reply)

    def _classify(self, token: str, reply: _Reply) -> Outcome:
        if 200 <= reply.status < 300:
            name = reply.body.get("name") if isinstance(reply.body, dict) else None
            if isinstance(name, str) and name:
                return Outcome.accepted(name)
            return Outcome.retry(detail="malformed answer")
        error = reply.body.get("error") if isinstance(reply.body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = _error_code(reply) or ""
        text = str(error.get("message") or "")[:200]
        detail = f"{reply.status} {code}: {text}".rstrip(": ")
        after_s = retry_after_s(reply.retry_after, self._now())
        if code in _DEAD_CODES or (code == "INVALID_ARGUMENT" and _bad_token(error, text)):
            return Outcome.reject_recipient(detail, dead=(token,))
        if code == "INVALID_ARGUMENT":
            return Outcome.reject_message(detail)
        if code in _RETRY_CODES or reply.status in (408, 429) or reply.status >= 500:
            return Outcome.retry(after_s, detail)
        if code in _CONFIG_CODES or reply.status in (401, 403, 404) or reply.status < 400:
            return Outcome.config_error(detail)  # a 3xx means base_url points somewhere else
        return Outcome.reject_message(detail)

    async def _access_token(self, stale: str | None) -> str:
        async with self._token_lock:
            fresh = self._now() < self._token_refresh_at
            if self._token is not None and fresh and self._token != stale:
                return self._token
            self._token, self._token_refresh_at = await self._fetch_token()
            log.info("fcm.token_refreshed", channel=self.name)
            return self._token

    async def _fetch_token(self) -> tuple[str, float]:
        now = self._now()
        iat = int(now)
        claims = {
            "iss": self._client_email,
            "scope": SCOPE,
            "aud": self._token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_S,
        }
        headers = {"kid": self._key_id} if isinstance(self._key_id, str) else None
        assertion = jwt.encode(claims, self._private_key, algorithm="RS256", headers=headers)
        reply = await self._post(
            self._token_uri, data={"grant_type": GRANT_TYPE, "assertion": assertion}
        )
        body = reply.body if isinstance(reply.body, dict) else {}
        if 200 <= reply.status < 300:
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise _Failed(Outcome.retry(detail="token endpoint: malformed answer"))
            expires_in = body.get("expires_in")
            if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
                expires_in = ASSERTION_LIFETIME_S
            return token, now + float(expires_in) - REFRESH_EARLY_S
        detail = f"token endpoint {reply.status}: {body.get('error') or 'no error code'}"
        if reply.status in (408, 429) or reply.status >= 500:
            raise _Failed(Outcome.retry(retry_after_s(reply.retry_after, now), detail))
        # invalid_grant (bad key, clock skew, deleted account), invalid_client, ...
        raise _Failed(Outcome.config_error(detail))

    async def _post(self, url: str, **kwargs: Any) -> _Reply:
        try:
            async with self._session.post(
                url, timeout=self._timeout, allow_redirects=False, **kwargs
            ) as resp:
                raw = await resp.read()
                return _Reply(resp.status, parse_json(raw), resp.headers.get("Retry-After"))
        except NETWORK_ERRORS as exc:
            raise _Failed(Outcome.retry(detail=f"network error: {type(exc).__name__}")) from None


def combine(results: list[tuple[str, Outcome]]) -> Outcome:
    """One outcome for a message sent to several devices: accepted if any device took it."""
    dead = tuple(address for address, o in results if o.kind == "reject_recipient")
    failures = "; ".join(o.detail for _, o in results if o.kind != "accepted" and o.detail)
    accepted = [o for _, o in results if o.kind == "accepted"]
    if accepted:
        return Outcome(
            "accepted", provider_id=accepted[0].provider_id, detail=failures, dead_addresses=dead
        )
    for kind in ("config_error", "reject_message", "retry"):
        found = [o for _, o in results if o.kind == kind]
        if found:
            after = [o.after_s for o in found if o.after_s is not None]
            return Outcome(
                found[0].kind,
                after_s=max(after) if after else None,
                detail=failures,
                dead_addresses=dead,
            )
    return Outcome.reject_recipient(failures, dead=dead)


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    return FcmChannel(name, keys, http_session(name, "fcm", session), limits)


def _fcm_message(message: OutboundMessage, ttl_s: int) -> dict[str, Any]:
    payload = message.payload
    notification = {
        k: str(payload[k]) for k in ("title", "body", "image") if payload.get(k) not in (None, "")
    }
    extra = payload.get("data") or {}
    if not isinstance(extra, Mapping):
        raise ValueError("payload data must be a mapping")
    # FCM data values are strings only.
    data = {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in extra.items()
    }
    if payload.get("url"):
        data["url"] = str(payload["url"])
    data.setdefault("message_id", message.id)  # the app reports opens with it
    out: dict[str, Any] = {"notification": notification, "data": data}
    if "image" in notification:
        out["apns"] = {
            "payload": {"aps": {"mutable-content": 1}},
            "fcm_options": {"image": notification["image"]},
        }
    size = len(json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {size} bytes, over {MAX_PAYLOAD_BYTES}")
    out["android"] = {"ttl": f"{ttl_s}s", "priority": "high"}
    return out


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def _error_code(reply: _Reply) -> str | None:
    """details[].errorCode, else error.status, else what the HTTP status implies."""
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(error, dict):
        details = error.get("details")
        for item in details if isinstance(details, list) else ():
            if isinstance(item, dict) and isinstance(item.get("errorCode"), str):
                return str(item["errorCode"])
        if isinstance(error.get("status"), str):
            return str(error["status"])
    return "UNAUTHENTICATED" if reply.status == 401 else None


def _bad_token(error: dict[str, Any], text: str) -> bool:
    if _INVALID_TOKEN_TEXT in text.lower():
        return True
    details = error.get("details")
    for item in details if isinstance(details, list) else ():
        violations = item.get("fieldViolations") if isinstance(item, dict) else None
        for v in violations if isinstance(violations, list) else ():
            if isinstance(v, dict) and v.get("field") == "message.token":
                return True
    return False


def _service_account(name: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    path, inline = config.get("service_account_file"), config.get("service_account")
    if path and inline:
        raise ValueError(
            f"channels.{name}.service_account: give service_account_file or service_account, "
            "not both"
        )
    if path:
        where = f"channels.{name}.service_account_file"
        try:
            text = Path(str(path)).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read {path}: {exc.strerror}") from None
    elif inline:
        where = f"channels.{name}.service_account"
        text = inline if isinstance(inline, str) else ""
        if isinstance(inline, Mapping):
            return dict(inline), where
    else:
        raise ValueError(f"channels.{name}.service_account_file: required (or service_account)")
    try:
        account = json.loads(text)
    except ValueError:
        raise ValueError(f"{where}: not a JSON service-account key") from None
    if not isinstance(account, dict):
        raise ValueError(f"{where}: not a JSON service-account key")
    return account, where


def _account_str(account: Mapping[str, Any], key: str, where: str) -> str:
    value = account.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: '{key}' missing from the service account")
    return value


def _rsa_key(pem: str, where: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{where}: 'private_key' is not an unencrypted RSA PEM key")
    return key
