"""A profile's addresses as lookup keys (the `profile_addresses` index), and what a search
for a user names: the same normalisation on both sides, so `Ann@Example.com` finds the
profile that says `ann@example.com` and `+1 (555) 000-1234` the one that says `+15550001234`.

The store's migration fills the index from existing profiles with the same rules in SQL
(engine/store/migrations.py): keep the two in step.
"""

from __future__ import annotations

import re
from typing import Any

# Profile key -> lookup kind: a phone is found whether it is the SMS or the WhatsApp number.
ADDRESS_KEYS: dict[str, str] = {"email": "email", "phone": "phone", "whatsapp": "phone"}
MAX_ADDRESS_CHARS = 320  # longer is no address anyone types into a search box
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PHONE_NOISE = str.maketrans("", "", " -().")
_PHONE_RE = re.compile(r"\+?[0-9]{3,20}")


def normalize(kind: str, value: str) -> str | None:
    """The lookup key of an address, None when it is none: email lower-cased (ASCII, as SQL's
    lower() does) without surrounding spaces; a phone without spaces, dashes, dots and
    brackets, a leading 00 as + (E.164)."""
    if kind == "email":
        key = value.strip(" ").translate(_ASCII_UPPER)
        return key if key and "@" in key and len(key) <= MAX_ADDRESS_CHARS else None
    if kind == "phone":
        key = value.translate(_PHONE_NOISE)
        if key.startswith("00"):
            key = "+" + key[2:]
        return key if _PHONE_RE.fullmatch(key) else None
    return None


def addresses_of(profile: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, key) of every address the profile holds, once each, sorted."""
    found: set[tuple[str, str]] = set()
    for field, kind in ADDRESS_KEYS.items():
        value = profile.get(field)
        if isinstance(value, str):
            key = normalize(kind, value)
            if key is not None:
                found.add((kind, key))
    return sorted(found)


def touches_addresses(data: dict[str, Any]) -> bool:
    """Whether a profile.updated event's data may change the profile's addresses."""
    return any(k in data for k in ADDRESS_KEYS)


def search_keys(query: str) -> list[tuple[str, str]]:
    """What a search box's text may be besides a user id: an email or a phone number."""
    out = []
    for kind in ("email", "phone"):
        key = normalize(kind, query)
        if key is not None:
            out.append((kind, key))
    return out
