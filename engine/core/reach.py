"""Channels and reachability: can this user be sent to on that channel, and at what address.
Where a kind's addresses are, and whether it asks consent, its ChannelKind says
(channels/kinds)."""

from __future__ import annotations

from typing import Any

from channels.kinds import CHANNELS, find_kind

__all__ = ["CHANNELS"]


def addresses(profile: dict[str, Any], channel: str) -> list[Any]:
    """The addresses a profile holds for a channel, invalid ones included."""
    kind = find_kind(channel)
    return [] if kind is None else kind.addresses(profile)


def address_key(address: Any, channel: str | None = None) -> str:
    """A stable string for an address: its kind's key (a web push subscription is keyed by
    its endpoint). Without the channel: an object's endpoint, else the address as text."""
    kind = find_kind(channel) if channel is not None else None
    if kind is not None:
        return kind.address_key(address)
    if isinstance(address, dict):
        return str(address.get("endpoint"))
    return str(address)


def valid_addresses(profile: dict[str, Any], channel: str) -> tuple[list[Any], str | None]:
    """(usable addresses, reason when none): reasons are no_address / address_invalid."""
    found = addresses(profile, channel)
    if not found:
        return [], "no_address"
    invalid = set((profile.get("invalid") or {}).get(channel) or ())
    usable = [a for a in found if address_key(a, channel) not in invalid]
    if not usable:
        return [], "address_invalid"
    return usable, None


def consent_reason(
    profile: dict[str, Any], channel: str, *, marketing: bool, opt_in: bool
) -> str | None:
    """`no_consent` when a marketing message may not go to this channel, else None."""
    kind = find_kind(channel)
    if not marketing or (kind is not None and not kind.needs_consent):
        return None
    given = (profile.get("consent") or {}).get(channel)
    if given is False or (opt_in and given is not True):
        return "no_consent"
    return None
