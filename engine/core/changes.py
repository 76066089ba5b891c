"""What one unit of work changed, and the order rows it records: written in one transaction."""

from __future__ import annotations

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


@dataclass
class Changes:
    """Everything one unit of work changed, written in one transaction."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    # (product_id, kind, user_id, at) to upsert; (product_id, kind, user_id) to delete
    interest_add: list[tuple[str, str, str, float]] = field(default_factory=list)
    interest_remove: list[tuple[str, str, str]] = field(default_factory=list)
    # user ids whose cart interest is replaced before interest_add applies
    cart_reset: set[str] = field(default_factory=set)
    erased_users: set[str] = field(default_factory=set)
    orders: list[Order] = field(default_factory=list)
    # inbox rows whose effects are in this unit of work, and fan-out progress
    inbox_done: list[int] = field(default_factory=list)
    inbox_cursor: tuple[int, str] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.inbox_done
            or self.inbox_cursor
            or self.profiles
            or self.instances
            or self.messages
            or self.interest_add
            or self.interest_remove
            or self.cart_reset
            or self.erased_users
            or self.orders
        )
