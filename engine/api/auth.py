"""Ingest auth (Bearer token or HMAC-signed body) and the metrics token; the admin API's
accounts and roles are in accounts.py."""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from aiohttp import web

from engine.lang.config import AuthConfig

HMAC_TOLERANCE_S = 300.0  # how old a signed request may be (SPEC 8: 5 minutes)
HMAC_SKEW_S = 30.0  # how far ahead of our clock the sender's may run


def bearer_text(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def same_text(given: str, expected: str) -> bool:
    """Constant-time equality of any two strings, compared as bytes: header and form text
    may be anything (non-ASCII, or bytes that are not UTF-8, which aiohttp reads as
    surrogate escapes), and compare_digest raises on non-ASCII str."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


@dataclass(frozen=True, slots=True)
class IngestAuth:
    """Whether a request may ingest; a signed one's batch key (its replay stores nothing)."""

    denied: str | None = None
    batch_key: str | None = None


def ingest_auth(request: web.Request, body: bytes, auth: AuthConfig, now: float) -> IngestAuth:
    if not auth.ingest_tokens and not auth.ingest_hmac_secret:
        return IngestAuth()  # open ingest, warned at start-up
    token = bearer_text(request)
    if token is not None and any(same_text(token, t) for t in auth.ingest_tokens):
        return IngestAuth()
    signature = request.headers.get("X-Kaskad-Signature")
    if auth.ingest_hmac_secret and signature:
        return _signed(request, body, auth.ingest_hmac_secret, signature, now)
    if token is not None:
        return IngestAuth("unknown bearer token")
    return IngestAuth("missing credentials: Authorization: Bearer <token> or X-Kaskad-Signature")


def _signed(
    request: web.Request, body: bytes, secret: str, signature: str, now: float
) -> IngestAuth:
    stamp = request.headers.get("X-Kaskad-Timestamp", "")
    try:
        when = float(stamp)
    except ValueError:
        when = math.nan
    if not math.isfinite(when):  # nan would pass every comparison: a signature for ever
        return IngestAuth("X-Kaskad-Timestamp must be unix seconds")
    if now - when > HMAC_TOLERANCE_S:
        return IngestAuth("X-Kaskad-Timestamp is outside the 5 minute tolerance")
    if when - now > HMAC_SKEW_S:
        return IngestAuth(
            f"X-Kaskad-Timestamp is more than {HMAC_SKEW_S:.0f} s ahead of the server's clock"
        )
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    if not same_text(signature.removeprefix("sha256="), expected.hexdigest()):
        return IngestAuth("X-Kaskad-Signature does not match")
    # Replays within the tolerance are the same batch: the store remembers the key.
    return IngestAuth(batch_key="sig:" + expected.hexdigest())


def ingest_denied(request: web.Request, body: bytes, auth: AuthConfig, now: float) -> str | None:
    """None when the request may ingest, else why not."""
    return ingest_auth(request, body, auth, now).denied
