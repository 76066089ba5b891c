"""The engine's durable state: profiles, instances, messages. Plain data, JSON-serialisable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.core.waits import WaitState

ACTIVE = "active"
# How an instance ended: a marketer reads these in the timeline.
ENDED = frozenset({"converted", "exited", "completed", "restarted", "expired", "stopped", "error"})
# Message statuses: the furthest state reached.
MESSAGE_STATUSES = (
    "queued",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "skipped",
    "failed",
    "cancelled",
)


@dataclass(slots=True)
class Instance:
    id: str
    rule_id: str
    rule_version: str
    user_id: str
    key: str
    started_at: float
    trigger: dict[str, Any]
    status: str = ACTIVE
    pc: int = 0
    # What the instance waits on; None while running.
    state: WaitState | None = None
    due_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    variant: str | None = None
    # A control group's instance sends nothing: "rule" (the rule's holdout) or "global"
    # (policies.global_holdout); None for everyone else.
    holdout: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(slots=True)
class Message:
    id: str
    instance_id: str
    rule_id: str
    user_id: str
    step: str
    channel: str | None
    template: str | None
    variant: str | None
    category: str
    status: str
    created_at: float
    reason: str | None = None
    sent_at: float | None = None
    provider_id: str | None = None
    payload: dict[str, Any] | None = None
    detail: str | None = None
    delivered_at: float | None = None
    opened_at: float | None = None
    clicked_at: float | None = None
    recipient: list[Any] | None = None
    attempts: int = 0
    next_attempt_at: float | None = None


@dataclass(slots=True)
class Record:
    """One line of the send/skip timeline (`kaskad simulate`)."""

    time: float
    rule: str
    user_id: str
    step: str
    channel: str | None
    template: str | None
    variant: str | None
    status: str
    reason: str | None


@dataclass(slots=True)
class UserState:
    user_id: str
    profile: dict[str, Any]
    instances: list[Instance] = field(default_factory=list)
    # Recent messages (caps, reactions by rule + channel), oldest first.
    messages: list[Message] = field(default_factory=list)
    # (rule id, key) -> when an instance last started, for cooldowns.
    last_starts: dict[tuple[str, str], float] = field(default_factory=dict)
    profile_dirty: bool = False
    # What segments and interests need to go on (engine/core/segments.py), and when its
    # next window runs out.
    facts: dict[str, Any] = field(default_factory=dict)
    facts_due: float | None = None


def new_profile(user_id: str, now: float) -> dict[str, Any]:
    return {"user_id": user_id, "created_at": now, "attributes": {}, "consent": {}}


PROFILE_DEFAULTS: dict[str, Any] = {
    "email": None,
    "phone": None,
    "whatsapp": None,
    "telegram_chat_id": None,
    "push_tokens": [],
    "webpush": [],
    "timezone": None,
    "locale": None,
    "consent": {},
    "attributes": {},
    "orders_count": 0,
    "revenue": 0,
    "last_order_at": None,
    "points_balance": 0,
    "rfm": None,
    "invalid": {},
    "segments": [],
    "interests": {"category": [], "brand": []},
}


def profile_context(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile as expressions see it: every standard field present."""
    return {**PROFILE_DEFAULTS, **profile}
