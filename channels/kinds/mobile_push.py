"""Mobile push (FCM): one message per device token the profile lists."""

from __future__ import annotations

from .base import ChannelKind, mapping, text


class MobilePush(ChannelKind):
    name = "mobile_push"
    address_from = ("push_tokens",)
    many = True
    fields = {
        "title": text(),
        "body": text(required=True),
        "url": text(),
        "image": text(),
        "data": mapping(),
    }
    # FCM HTTP v1: "the maximum payload for both message types is 4096 bytes"
    # (https://firebase.google.com/docs/cloud-messaging/concept-options).
    max_payload_bytes = 4096
