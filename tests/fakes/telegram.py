"""A fake Telegram Bot API (sendMessage), scriptable per chat id."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._server import FakeServer, response

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: JSON; str: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # the fake waits this long (or until it closes) before answering


def tg_error(
    code: int, description: str, headers: dict[str, str] | None = None, **parameters: Any
) -> Reply:
    """An error answer exactly as the Bot API writes it."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(code, body, headers or {})


class FakeTelegram(FakeServer):
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[dict[str, Any]] = []  # JSON bodies of sendMessage calls
        self.migrations: dict[Any, int] = {}  # old chat id -> supergroup id
        self._replies: dict[str, list[Reply]] = {}
        self._ids = itertools.count(42)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/sendMessage", self._send_message)

    def script(self, chat_id: Any, *replies: Reply) -> None:
        """Answers for the next messages to this chat; then success again."""
        self._replies.setdefault(str(chat_id), []).extend(replies)

    async def _send_message(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return await self._answer(tg_error(401, "Unauthorized"))
        try:
            body = await request.json()
        except ValueError:
            return await self._answer(tg_error(400, "Bad Request: invalid JSON"))
        self.requests.append(body)
        chat_id, text = body.get("chat_id"), body.get("text")
        if chat_id in (None, ""):
            return await self._answer(tg_error(400, "Bad Request: chat_id is empty"))
        if not text:
            return await self._answer(tg_error(400, "Bad Request: message text is empty"))
        if chat_id in self.migrations:
            return await self._answer(
                tg_error(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    migrate_to_chat_id=self.migrations[chat_id],
                )
            )
        queued = self._replies.get(str(chat_id))
        if queued:
            return await self._answer(queued.pop(0))
        result = {
            "message_id": next(self._ids),
            "from": {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Shop"},
            "chat": {"id": chat_id, "type": "private"},
            "date": 1700000000,
            "text": text,
        }
        return web.json_response({"ok": True, "result": result})

    async def _answer(self, reply: Reply) -> web.Response:
        await self.hold(reply.delay_s)
        return response(reply.body, reply.status, reply.headers)
