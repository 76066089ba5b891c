"""Channels and reachability: can this user be sent to on that channel, and at what address."""

from __future__ import annotations

from typing import Any

from channels.kinds import CHANNELS

__all__ = ["CHANNELS"]


def addresses(profile: dict[str, Any], channel: str) -> list[Any]:
    """The addresses a profile holds for a channel, invalid ones included."""
    if channel == "email":
        value = profile.get("email")
    elif channel == "sms":
        value = profile.get("phone")
    elif channel == "whatsapp":
        value = profile.get("whatsapp") or profile.get("phone")
    elif channel == "telegram":
        value = profile.get("telegram_chat_id")
    elif channel == "mobile_push":
        return list(profile.get("push_tokens") or [])
    elif channel == "webpush":
        return list(profile.get("webpush") or [])
    elif channel == "webhook":
        return [profile.get("user_id")]
    else:
        return []
    return [] if value in (None, "") else [value]


def address_key(address: Any) -> str:
    """A stable string for an address (a web push subscription is keyed by its endpoint)."""
    if isinstance(address, dict):
        return str(address.get("endpoint"))
    return str(address)


def valid_addresses(profile: dict[str, Any], channel: str) -> tuple[list[Any], str | None]:
    """(usable addresses, reason when none): reasons are no_address / address_invalid."""
    found = addresses(profile, channel)
    if not found:
        return [], "no_address"
    invalid = set((profile.get("invalid") or {}).get(channel) or ())
    usable = [a for a in found if address_key(a) not in invalid]
    if not usable:
        return [], "address_invalid"
    return usable, None


def consent_reason(
    profile: dict[str, Any], channel: str, *, marketing: bool, opt_in: bool
) -> str | None:
    """`no_consent` when a marketing message may not go to this channel, else None."""
    if not marketing or channel == "webhook":
        return None
    given = (profile.get("consent") or {}).get(channel)
    if given is False or (opt_in and given is not True):
        return "no_consent"
    return None
