"""Ingest auth (Bearer token or HMAC-signed body) and the admin token."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from engine.lang.config import AuthConfig

HMAC_TOLERANCE_S = 300.0


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def ingest_denied(request: web.Request, body: bytes, auth: AuthConfig, now: float) -> str | None:
    """None when the request may ingest, else why not."""
    if not auth.ingest_tokens and not auth.ingest_hmac_secret:
        return None  # open ingest, warned at start-up
    token = _bearer(request)
    if token is not None and any(hmac.compare_digest(token, t) for t in auth.ingest_tokens):
        return None
    signature = request.headers.get("X-Kaskad-Signature")
    if auth.ingest_hmac_secret and signature:
        stamp = request.headers.get("X-Kaskad-Timestamp", "")
        try:
            when = float(stamp)
        except ValueError:
            return "X-Kaskad-Timestamp must be unix seconds"
        if abs(now - when) > HMAC_TOLERANCE_S:
            return "X-Kaskad-Timestamp is outside the 5 minute tolerance"
        expected = hmac.new(
            auth.ingest_hmac_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        given = signature.removeprefix("sha256=")
        if hmac.compare_digest(given, expected):
            return None
        return "X-Kaskad-Signature does not match"
    if token is not None:
        return "unknown bearer token"
    return "missing credentials: Authorization: Bearer <token> or X-Kaskad-Signature"


def admin_denied(request: web.Request, auth: AuthConfig) -> bool:
    if not auth.admin_token:
        return False
    token = _bearer(request)
    return token is None or not hmac.compare_digest(token, auth.admin_token)


def metrics_denied(request: web.Request, auth: AuthConfig) -> bool:
    """GET /metrics takes auth.metrics_token or the admin token; open only with neither."""
    accepted = [t.encode() for t in (auth.metrics_token, auth.admin_token) if t]
    if not accepted:
        return False
    token = _bearer(request)
    given = token.encode() if token is not None else None
    return given is None or not any(hmac.compare_digest(given, t) for t in accepted)
