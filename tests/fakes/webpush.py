"""A fake RFC 8030 push service: checks VAPID, decrypts aes128gcm bodies, scriptable per
subscription."""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from py_vapid.jwt import decode as vapid_decode

from ._server import FakeServer


@dataclass
class Reply:
    status: int = 201
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # the fake waits this long (or until it closes) before answering


@dataclass
class Push:
    """One push the service accepted for delivery: decrypted, with its VAPID claims."""

    subscription: str
    payload: Any
    headers: dict[str, str]
    claims: dict[str, Any]
    public_key: str  # the VAPID key (k=) that signed it


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class FakePushService(FakeServer):
    def __init__(self, vapid_public_key: str | None = None) -> None:
        self.vapid_public_key = vapid_public_key  # when set, other keys get 403 (RFC 8292 §4.2)
        self.pushes: list[Push] = []
        self.requests = 0
        self._subscriptions: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self._replies: dict[str, list[Reply]] = {}
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/push/{sub}", self._push)

    @property
    def origin(self) -> str:
        return self.base_url

    def subscribe(self, name: str = "s1") -> dict[str, Any]:
        """A browser's PushSubscription for a new user agent key pair and auth secret."""
        key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
        self._subscriptions[name] = (key, auth)
        return {
            "endpoint": f"{self.origin}/push/{name}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(raw_public_key(key)), "auth": b64url(auth)},
        }

    def script(self, name: str, *replies: Reply) -> None:
        """Answers for the next pushes to this subscription; then 201 again."""
        self._replies.setdefault(name, []).extend(replies)

    async def _push(self, request: web.Request) -> web.Response:
        self.requests += 1
        name = request.match_info["sub"]
        if name not in self._subscriptions:
            return web.json_response({"errno": 102, "error": "Not Found"}, status=404)
        headers = dict(request.headers)
        if not headers.get("TTL", "").isdigit():
            return web.json_response({"errno": 111, "error": "Missing TTL header"}, status=400)
        if headers.get("Content-Encoding") != "aes128gcm":
            return web.json_response({"errno": 110, "error": "Bad encoding"}, status=400)
        if headers.get("Content-Type") != "application/octet-stream":
            return web.json_response({"errno": 110, "error": "Bad content type"}, status=400)
        vapid = self._vapid(headers.get("Authorization", ""))
        if isinstance(vapid, web.Response):
            return vapid
        claims, public_key = vapid
        key, auth = self._subscriptions[name]
        try:
            plaintext = http_ece.decrypt(
                await request.read(), private_key=key, auth_secret=auth, version="aes128gcm"
            )
        except http_ece.ECEException:
            return web.json_response({"errno": 110, "error": "Decryption failed"}, status=400)
        queued = self._replies.get(name)
        if queued:
            return await self._answer(queued.pop(0))
        self.pushes.append(Push(name, json.loads(plaintext), headers, claims, public_key))
        location = f"{self.origin}/m/{next(self._ids)}"
        return web.Response(status=201, headers={"Location": location})

    def _vapid(self, header: str) -> tuple[dict[str, Any], str] | web.Response:
        unauthorized = web.json_response({"errno": 109, "error": "Unauthorized"}, status=401)
        try:
            if not Vapid02.verify(header):
                return unauthorized
            parts = dict(p.split("=", 1) for p in header.split(" ", 1)[1].split(","))
            claims = vapid_decode(parts["t"], parts["k"])
        except Exception:  # any malformed header is an unauthorized request
            return unauthorized
        now = time.time()
        if not (
            claims.get("aud") == self.origin
            and now < claims.get("exp", 0) <= now + 86400
            and str(claims.get("sub", "")).startswith(("mailto:", "https:"))
        ):
            return unauthorized
        if self.vapid_public_key is not None and parts["k"] != self.vapid_public_key:
            return web.json_response({"errno": 109, "error": "Forbidden"}, status=403)
        return claims, parts["k"]

    async def _answer(self, reply: Reply) -> web.Response:
        await self.hold(reply.delay_s)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
