"""Telegram (Bot API): the profile's chat id, one text message."""

from __future__ import annotations

from typing import Any

from .base import ChannelKind, choice, flag, text


class Telegram(ChannelKind):
    name = "telegram"
    address_from = ("telegram_chat_id",)
    fields = {
        "text": text(required=True),
        "parse_mode": choice("HTML", "MarkdownV2", "Markdown"),
        "disable_preview": flag(),
    }
    # Bot API sendMessage: "Text of the message to be sent, 1-4096 characters after entities
    # parsing" (https://core.telegram.org/bots/api#sendmessage).
    text_chars = {"text": (1, 4096)}

    def check_one(self, address: Any) -> str | None:
        # Bot API chat ids are integers; shops send them as numbers or text.
        if isinstance(address, bool) or not isinstance(address, str | int):
            return "must be a string or an integer"
        return None
