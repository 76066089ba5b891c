"""WhatsApp (Cloud API): a template message to the profile's WhatsApp number, else its
phone (SPEC 7)."""

from __future__ import annotations

from .base import ChannelKind, text, text_list


class WhatsApp(ChannelKind):
    name = "whatsapp"
    address_from = ("whatsapp", "phone")
    fields = {
        "name": text(required=True),
        "language": text(required=True),
        "params": text_list(),
    }
