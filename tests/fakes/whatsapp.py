"""A fake WhatsApp Cloud API (template messages), scriptable per recipient."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._server import FakeServer, response

ACCESS_TOKEN = "EAAG-test-access-token"
PHONE_NUMBER_ID = "106540352242922"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: JSON; str: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # the fake waits this long (or until it closes) before answering


def wa_error(
    status: int, code: int, message: str = "", details: str = "", error_type: str = "OAuthException"
) -> Reply:
    """An error answer exactly as the Graph API writes it."""
    error: dict[str, Any] = {
        "message": message or f"(#{code}) error",
        "type": error_type,
        "code": code,
        "fbtrace_id": "AbCdEf",
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return Reply(status, {"error": error})


class FakeWhatsApp(FakeServer):
    def __init__(
        self,
        version: str = "v21.0",
        on_request: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.version = version
        self.requests: list[dict[str, Any]] = []  # JSON bodies of accepted-for-checking calls
        # Called with each body as it is added to `requests`, in the serving (test's) loop.
        self.on_request = on_request
        self._replies: dict[str, list[Reply]] = {}
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/{phone_number_id}/messages", self._messages)

    def script(self, to: str, *replies: Reply) -> None:
        """Answers for the next messages to this number (digits); then success again."""
        self._replies.setdefault(to, []).extend(replies)

    async def _messages(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return await self._answer(
                wa_error(401, 190, "Error validating access token: Session has expired")
            )
        if request.match_info["version"] != self.version:
            return await self._answer(wa_error(400, 2635, "(#2635) Invalid API version"))
        if request.match_info["phone_number_id"] != PHONE_NUMBER_ID:
            return await self._answer(
                wa_error(400, 100, "Unsupported post request. Object does not exist")
            )
        try:
            body = await request.json()
        except ValueError:
            return await self._answer(wa_error(400, 100, "Invalid JSON"))
        self.requests.append(body)
        if self.on_request is not None:
            self.on_request(body)
        problem = _problem(body)
        if problem:
            return await self._answer(wa_error(400, 100, "(#100) Invalid parameter", problem))
        queued = self._replies.get(body["to"])
        if queued:
            return await self._answer(queued.pop(0))
        wamid = f"wamid.HBgL{next(self._ids):06d}"
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def _answer(self, reply: Reply) -> web.Response:
        await self.hold(reply.delay_s)
        return response(reply.body, reply.status, reply.headers)


def _problem(body: Any) -> str:
    """What the Cloud API would say about a malformed template message, else ''."""
    if not isinstance(body, dict):
        return "body is not an object"
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be whatsapp"
    if body.get("recipient_type", "individual") != "individual" or body.get("type") != "template":
        return "recipient_type/type"
    if not str(body.get("to", "")).isdigit():
        return "to must be digits"
    template = body.get("template")
    if not isinstance(template, dict) or not template.get("name"):
        return "template.name is required"
    if not isinstance(template.get("language"), dict) or not template["language"].get("code"):
        return "template.language.code is required"
    for component in template.get("components", []):
        if component.get("type") != "body" or not component.get("parameters"):
            return "components[].type/parameters"
        for p in component["parameters"]:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                return "parameters[] must be text"
    return ""
