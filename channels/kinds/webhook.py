"""The webhook: a signed JSON POST about the user to the shop's own endpoint (SPEC 7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ChannelKind, mapping


class Webhook(ChannelKind):
    name = "webhook"
    fields = {"body": mapping(required=True)}
    # The message goes to the shop's system, not to the user: no consent to ask.
    needs_consent = False

    def addresses(self, profile: Mapping[str, Any]) -> list[Any]:
        # Every user is reachable: the address is the user id.
        return [profile.get("user_id")]
