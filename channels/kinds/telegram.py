"""Telegram (Bot API): the profile's chat id, one text message."""

from __future__ import annotations

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
