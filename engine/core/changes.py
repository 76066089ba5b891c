"""What one unit of work changed, and the order rows it records: written in one transaction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.core.model import Instance, Message

TOUCHES = ("click", "open", "send")


@dataclass(frozen=True, slots=True)
class Touch:
    """A message as an order's touch: which one, when it was clicked/opened/sent, its row."""

    message_id: str
    at: float
    rule: str
    step: str
    channel: str | None
    variant: str | None


@dataclass(slots=True)
class Order:
    """An order as stats keep it, with the user's last touch of each kind before it."""

    user_id: str
    order_id: str
    at: float
    total: float | None  # None: missing or negative in the event (counted, revenue 0)
    currency: str | None
    source: str  # online | offline
    event_id: str | None = None
    touches: dict[str, Touch] = field(default_factory=dict)  # kind (TOUCHES) -> touch


@dataclass(frozen=True, slots=True)
class JobProgress:
    """How far a run of a scheduled job (a broadcast) got: written with the run's work."""

    name: str
    run_at: float  # the fire time being run
    cursor: str  # the last user done
    done: bool = False


InterestKey = tuple[str, str, str]  # (product_id, kind, user_id)
# (rule id, step path, edge, hour): one count of the journey view (engine/core/journey.py)
JourneyKey = tuple[str, str, str, float]


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A user's own event as the per-user event log keeps it (the timeline, previews)."""

    user_id: str
    at: float  # the event's time
    type: str
    event_id: str | None
    data: dict[str, Any]


@dataclass
class Changes:
    """Everything one unit of work changed, written in one transaction.

    Each field holds the net effect of the unit's events in their order, so a batch leaves
    the same state as the same events one by one.
    """

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    # Each interest's last word: when it was (re)stated, or None when withdrawn.
    interests: dict[InterestKey, float | None] = field(default_factory=dict)
    # Users whose whole cart interest goes (before `interests` applies).
    cart_reset: set[str] = field(default_factory=set)
    erased_users: set[str] = field(default_factory=set)
    orders: list[Order] = field(default_factory=list)
    # inbox rows whose effects are in this unit of work, and fan-out progress
    inbox_done: list[int] = field(default_factory=list)
    inbox_cursor: tuple[int, str] | None = None
    job: JobProgress | None = None
    # user id -> (segment and interest facts, when their next window runs out)
    facts: dict[str, tuple[dict[str, Any], float | None]] = field(default_factory=dict)
    # (user id, segment id) -> since when the user is a member, or None: no longer one
    # (the segment_members index beside profile["segments"], written with the profile)
    segment_members: dict[tuple[str, str], float | None] = field(default_factory=dict)
    # how many instances reached each step and went each way, added to journey_counts
    journey: Counter[JourneyKey] = field(default_factory=Counter)
    # user id -> the profile's (kind, key) addresses now (core/addresses), for the lookup
    # index; only users whose addresses may have changed
    addresses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # the users' own events, in order, for the bounded per-user event log
    user_events: list[UserEvent] = field(default_factory=list)
    # When the unit of work ran (its workspace's time): the time of the status changes it
    # records in the messages' history (engine/store/history.py); None: the messages' own.
    now: float | None = None

    def interest(self, product_id: str, kind: str, user_id: str, at: float | None) -> None:
        """State (at = now) or withdraw (None) one interest."""
        self.interests[(product_id, kind, user_id)] = at

    def reset_cart(self, user_id: str) -> None:
        """The user's cart is replaced: every cart interest stated so far goes."""
        for key in [k for k in self.interests if k[1] == "cart" and k[2] == user_id]:
            del self.interests[key]
        self.cart_reset.add(user_id)

    def interest_rows(self) -> tuple[list[tuple[str, str, str, float]], list[InterestKey]]:
        """(rows to upsert, keys to delete), applied after `cart_reset`."""
        upserts = [(*key, at) for key, at in self.interests.items() if at is not None]
        deletes = [key for key, at in self.interests.items() if at is None]
        return upserts, deletes

    def __bool__(self) -> bool:
        return bool(
            self.inbox_done
            or self.inbox_cursor
            or self.profiles
            or self.instances
            or self.messages
            or self.interests
            or self.cart_reset
            or self.erased_users
            or self.orders
            or self.job
            or self.facts
            or self.segment_members
            or self.journey
            or self.addresses
            or self.user_events
        )
