"""SMS: the profile's phone, one text; segments counted as the carriers count them."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import ChannelKind, LimitError, text

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")  # each takes two septets (escape + char)


def segments(body: str) -> tuple[int, str]:
    """(number of segments, 'GSM-7' or 'UCS-2') for a message body: GSM-7 160 characters,
    153 per part when split; UCS-2 70, 67 per part (PROVIDERS.md, Twilio)."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in body):
        septets = sum(2 if c in _GSM7_EXTENDED else 1 for c in body)
        return (1 if septets <= 160 else -(-septets // 153)), "GSM-7"
    # UCS-2 counts UTF-16 code units: characters outside the BMP take two.
    units = len(body.encode("utf-16-le")) // 2
    return (1 if units <= 70 else -(-units // 67)), "UCS-2"


class Sms(ChannelKind):
    name = "sms"
    address_from = ("phone",)
    fields = {"text": text(required=True)}
    # Twilio: messages over 10 segments are poorly delivered
    # (https://www.twilio.com/docs/glossary/what-sms-character-limit).
    max_segments: ClassVar[int] = 10

    def check_constant(self, key: str, value: str) -> str | None:
        if key != "text":
            return None
        count, encoding = segments(value)
        if count > self.max_segments:
            return f"is {count} {encoding} segments, over {self.max_segments}"
        return None

    def check_payload(self, payload: dict[str, Any]) -> None:
        count, encoding = segments(payload["text"])
        payload["segments"], payload["encoding"] = count, encoding
        if not payload["text"]:
            raise LimitError("sms.text rendered empty")
        if count > self.max_segments:
            raise LimitError(f"sms.text is {count} {encoding} segments, over {self.max_segments}")
        super().check_payload(payload)
