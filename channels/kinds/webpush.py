"""Web push: one message per browser subscription the profile lists (SPEC 7)."""

from __future__ import annotations

from typing import Any

from .base import ChannelKind, text


class WebPush(ChannelKind):
    name = "webpush"
    address_from = ("webpush",)
    many = True
    list_of = "subscription objects"
    fields = {
        "title": text(),
        "body": text(required=True),
        "url": text(),
        "icon": text(),
        "image": text(),
        "tag": text(),
    }
    # The push services take one 4096-byte record (RFC 8030 section 7.2); the adapter checks
    # the tighter encrypted plaintext bound (RFC 8291: 3993 bytes) on the exact body it sends.
    max_payload_bytes = 4096

    def address_key(self, address: Any) -> str:
        # A subscription is an object ({endpoint, keys}); its endpoint names it.
        if isinstance(address, dict):
            return str(address.get("endpoint"))
        return str(address)

    def check_one(self, address: Any) -> str | None:
        keys = address.get("keys") if isinstance(address, dict) else None
        if (
            not isinstance(address, dict)
            or not isinstance(address.get("endpoint"), str)
            or not isinstance(keys, dict)
            or not isinstance(keys.get("p256dh"), str)
            or not isinstance(keys.get("auth"), str)
        ):
            return "must be {endpoint, keys: {p256dh, auth}}"
        return None
