"""A Standard Webhooks receiver on 127.0.0.1: verifies the signature on its own, then answers
from a queue of canned replies (`otherwise` when the queue is empty, 401 when the signature
fails). `down()` makes it refuse connections, as a provider whose host is gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
    status: int | None = None  # what the receiver answered (None while held)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def user_id(self) -> str:
        try:
            return str(self.json.get("user_id", ""))
        except ValueError:
            return ""


@dataclass
class FakeReceiver(FakeServer):
    secret: str = "whsec_" + base64.b64encode(b"k" * 32).decode()
    replies: list[Reply] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    # The answer when `replies` is empty: a 200 unless a test makes the provider fail.
    otherwise: Reply = field(default_factory=Reply)
    # The answer to every request about one user (the body's user_id), before all else.
    per_user: dict[str, Reply] = field(default_factory=dict)
    # Set on every request that arrives (the test clears it before waiting again).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # When set to an Event, every answer waits until the test sets it (or the server closes).
    gate: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.url_for(PATH)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._receive)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = self._verify(request, body)
        delivery = Delivery(dict(request.headers), body, ok)
        self.deliveries.append(delivery)
        self.arrived.set()
        if not ok:
            delivery.status = 401
            return web.Response(status=401, text="bad signature")
        reply = self.per_user.get(delivery.user_id) or (
            self.replies.pop(0) if self.replies else self.otherwise
        )
        await self.hold(reply.delay_s)
        if self.gate is not None:
            await self.hold_until(self.gate)
        delivery.status = reply.status
        return web.Response(status=reply.status, text=reply.text, headers=reply.headers)

    async def wait_deliveries(self, count: int, within: float) -> None:
        """Until `count` requests have arrived; TimeoutError at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.deliveries) < count:
            self.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.deliveries)} of {count} webhook calls arrived")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    def ids(self) -> list[str]:
        """The webhook-id (kaskad's message id) of every signed request, in arrival order."""
        return [d.headers["webhook-id"] for d in self.deliveries if d.signature_ok]

    def accepted_ids(self) -> list[str]:
        """The webhook-id of every request answered with a 2xx, in arrival order."""
        return [
            d.headers["webhook-id"]
            for d in self.deliveries
            if d.status is not None and 200 <= d.status < 300
        ]

    def _verify(self, request: web.Request, body: bytes) -> bool:
        # Written from the spec, independently of channels.webhook, so the two check each other.
        msg_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        key = base64.b64decode(self.secret.split("_", 1)[1])
        mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        given = request.headers.get("webhook-signature", "").split(" ")
        return any(hmac.compare_digest(s.encode(), expected.encode()) for s in given)
