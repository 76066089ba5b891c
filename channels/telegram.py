"""Telegram Bot API sendMessage; the bot token lives in the URL path, so it never leaves here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import structlog

from ._common import (
    NETWORK_ERRORS,
    HttpChannel,
    base_url,
    http_session,
    parse_json,
    seconds,
)
from .base import Channel, Limits, OutboundMessage, Outcome

log = structlog.get_logger("kaskad.channels.telegram")

_KEYS = frozenset({"base_url", "bot_token"})
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
# Answers that mean this chat can never be written to by this bot (PROVIDERS.md).
_DEAD_CHAT = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot can't initiate conversation",
    "chat not found",
    "user not found",
    "peer_id_invalid",
)


class TelegramChannel(HttpChannel):
    """Bot API on a shared aiohttp session; the address is a chat id (or @channel username)."""

    provider = "bot_api"
    _log = log
    keys = _KEYS

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        session: aiohttp.ClientSession,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(name, config, session, limits)
        self.base_url = base_url(
            config.get("base_url") or "https://api.telegram.org", f"channels.{name}.base_url"
        )
        token = config.get("bot_token")
        if not token:
            raise ValueError(f"channels.{name}.bot_token: required")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            # Never echo the value: it may be a real token with a typo.
            raise ValueError(
                f"channels.{name}.bot_token: expected '<bot id>:<secret>' from BotFather"
            )
        self._token = token
        self._url = f"{self.base_url}/bot{token}/sendMessage"

    def __repr__(self) -> str:
        return f"<TelegramChannel {self.name!r} base_url={self.base_url!r}>"

    async def _send(self, message: OutboundMessage) -> Outcome:
        # A user has one chat with the bot: reach.addresses yields at most one chat id.
        chat_id = message.addresses[0] if message.addresses else None
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or chat_id == "":
            return Outcome.reject_recipient("no chat id")
        text = message.payload.get("text")
        if not isinstance(text, str) or not text.strip():
            return Outcome.reject_message("text is empty")
        body: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if message.payload.get("parse_mode"):
            body["parse_mode"] = str(message.payload["parse_mode"])
        if message.payload.get("disable_preview"):
            body["link_preview_options"] = {"is_disabled": True}
        outcome, migrated_to = await self._send_message(body)
        if migrated_to is None:
            return outcome
        # The group became a supergroup with a new id: resend once, tell the engine the new id.
        outcome, again = await self._send_message({**body, "chat_id": migrated_to})
        note = f"migrated_to={migrated_to}"
        if again is not None:
            return Outcome.reject_recipient(f"{note}; chat migrated again")
        return replace(outcome, detail=f"{note}; {outcome.detail}" if outcome.detail else note)

    async def _send_message(self, body: dict[str, Any]) -> tuple[Outcome, int | None]:
        """The outcome of one call, and the new chat id when the chat has migrated."""
        try:
            async with self._session.post(
                self._url, json=body, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status, raw = resp.status, await resp.read()
                header_after = resp.headers.get("Retry-After")
        except NETWORK_ERRORS as exc:
            return Outcome.retry(detail=f"network error: {type(exc).__name__}"), None
        answer = parse_json(raw)
        answer = answer if isinstance(answer, dict) else {}
        if answer.get("ok") is True and 200 <= status < 300:
            result = answer.get("result")
            result = result if isinstance(result, dict) else {}
            message_id, chat = result.get("message_id"), result.get("chat")
            chat_id = chat.get("id") if isinstance(chat, dict) else None
            if isinstance(chat_id, bool) or not isinstance(chat_id, int):
                chat_id = body["chat_id"]
            if isinstance(message_id, int) and not isinstance(message_id, bool):
                return Outcome.accepted(f"{chat_id}:{message_id}"), None
            return Outcome.retry(detail="malformed answer"), None
        return self._classify(status, answer, header_after)

    def _classify(
        self, status: int, answer: dict[str, Any], header_after: str | None
    ) -> tuple[Outcome, int | None]:
        code = answer.get("error_code")
        if isinstance(code, bool) or not isinstance(code, int) or status >= 500:
            code = status  # the HTTP status is all we have (or the server is failing)
        description = str(answer.get("description") or "")[:200]
        detail = f"{code} {description}".strip().replace(self._token, "***")
        parameters = answer.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        migrate_to = parameters.get("migrate_to_chat_id")
        if isinstance(migrate_to, int) and not isinstance(migrate_to, bool):
            return Outcome.reject_recipient(detail), migrate_to
        if code == 429 or code >= 500 or code == 408 or 200 <= code < 400:
            if 200 <= code < 400:
                detail = "malformed answer"  # a success status without a message, or a redirect
            return Outcome.retry(
                _after_s(parameters.get("retry_after"), header_after), detail
            ), None
        if code in (401, 404):
            return Outcome.config_error(detail), None  # a revoked token, or a wrong base_url
        lowered = description.lower()
        if code == 403 or any(text in lowered for text in _DEAD_CHAT):
            return Outcome.reject_recipient(detail), None
        # "can't parse entities", "message is too long", "text must be non-empty", ...
        return Outcome.reject_message(detail), None


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    return TelegramChannel(name, keys, http_session(name, "bot_api", session), limits)


def _after_s(retry_after: Any, header: str | None) -> float | None:
    """parameters.retry_after, else the Retry-After header (seconds)."""
    after = seconds(retry_after)
    return after if after is not None else seconds(header)
