"""A Twilio-compatible Messages API on 127.0.0.1 that checks what a real one checks.

Default answer: 201 with Twilio's message resource. Per recipient (`To`), a queue of canned
answers in `script`, consumed in order; Twilio's own validation errors come first.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._server import FakeServer

API_VERSION = "2010-04-01"
_DATE = "Thu, 24 Aug 2023 05:01:45 +0000"


@dataclass
class Reply:
    status: int = 201
    body: Any = None  # JSON, or raw text when a str (malformed answers)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # hold the answer: a timeout for the client


def error(code: int, status: int, message: str, **headers: str) -> Reply:
    """Twilio's error body, as the REST API sends it."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, body, headers)


@dataclass
class Request:
    account_sid: str
    form: dict[str, str]
    content_type: str
    accept: str


@dataclass
class FakeTwilio(FakeServer):
    account_sid: str = "AC" + "a" * 32
    auth_token: str = "fake-auth-token"
    script: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"/{API_VERSION}/Accounts/{{sid}}/Messages.json", self._create)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _answer(error(20003, 401, "Authenticate"))
        sid = request.match_info["sid"]
        if sid != self.account_sid:
            return _answer(
                error(20404, 404, f"The requested resource {request.path} was not found")
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(
            Request(
                sid,
                form,
                request.headers.get("Content-Type", ""),
                request.headers.get("Accept", ""),
            )
        )
        if "To" not in form:
            return _answer(error(21604, 400, "A 'To' phone number is required."))
        if "From" not in form and "MessagingServiceSid" not in form:
            return _answer(error(21603, 400, "A 'From' phone number is required."))
        if not form.get("Body"):
            return _answer(error(21602, 400, "Message body is required."))
        queue = self.script.get(form["To"])
        reply = queue.pop(0) if queue else self._created(form)
        await self.hold(reply.delay_s)
        return _answer(reply)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.account_sid, self.auth_token)

    def _created(self, form: dict[str, str]) -> Reply:
        n = len(self.requests)
        msid = f"SM{n:032x}"
        service = form.get("MessagingServiceSid")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{msid}"
        return Reply(
            201,
            {
                "account_sid": self.account_sid,
                "api_version": API_VERSION,
                "body": form["Body"],
                "date_created": _DATE,
                "date_sent": None,
                "date_updated": _DATE,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": service,
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": msid,
                # With a Messaging Service Twilio first answers "accepted", else "queued".
                "status": "accepted" if service else "queued",
                "subresource_uris": {"media": f"{uri}/Media.json"},
                "to": form["To"],
                "uri": f"{uri}.json",
            },
        )

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _answer(error(20404, 404, f"The requested resource {request.path} was not found"))


def _answer(reply: Reply) -> web.Response:
    if isinstance(reply.body, str):
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
    return web.Response(
        status=reply.status,
        body=json.dumps(reply.body).encode(),
        content_type="application/json",
        headers=reply.headers,
    )
