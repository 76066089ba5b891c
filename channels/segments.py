"""SMS segment counting: GSM-7 160/153 characters, UCS-2 70/67 (PROVIDERS.md, Twilio)."""

from __future__ import annotations

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")  # each takes two septets (escape + char)


def segments(text: str) -> tuple[int, str]:
    """(number of segments, 'GSM-7' or 'UCS-2') for a message body."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text):
        septets = sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
        return (1 if septets <= 160 else -(-septets // 153)), "GSM-7"
    # UCS-2 counts UTF-16 code units: characters outside the BMP take two.
    units = len(text.encode("utf-16-le")) // 2
    return (1 if units <= 70 else -(-units // 67)), "UCS-2"
