"""A Standard Webhooks receiver on 127.0.0.1: verifies the signature on its own, then answers
from a queue of canned replies (200 when the queue is empty, 401 when the signature fails).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._server import FakeServer

PATH = "/hooks/kaskad"


@dataclass
class Reply:
    status: int = 200
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # hold the answer: a timeout for the client


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeReceiver(FakeServer):
    secret: str = "whsec_" + base64.b64encode(b"k" * 32).decode()
    replies: list[Reply] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.url_for(PATH)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._receive)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = self._verify(request, body)
        self.deliveries.append(Delivery(dict(request.headers), body, ok))
        if not ok:
            return web.Response(status=401, text="bad signature")
        reply = self.replies.pop(0) if self.replies else Reply()
        await self.hold(reply.delay_s)
        return web.Response(status=reply.status, text=reply.text, headers=reply.headers)

    def _verify(self, request: web.Request, body: bytes) -> bool:
        # Written from the spec, independently of channels.webhook, so the two check each other.
        msg_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        key = base64.b64decode(self.secret.split("_", 1)[1])
        mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        given = request.headers.get("webhook-signature", "").split(" ")
        return any(hmac.compare_digest(s.encode(), expected.encode()) for s in given)
