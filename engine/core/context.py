"""What expressions and templates see: event, trigger, user, now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.core.model import UserState, profile_context


def context(
    now: float, st: UserState, event: dict[str, Any], trigger: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event": event,
        "trigger": trigger,
        "user": profile_context(st.profile),
        "now": datetime.fromtimestamp(now, UTC),
    }
