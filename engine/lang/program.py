"""A rule's steps compiled into a flat program: the instance's position is one integer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from engine.lang.expressions import Expression, TextTemplate

AWAIT_KINDS = ("delivered", "opened", "clicked")
# An awaited reaction is also met by any later one: a click implies the open.
REACTIONS_MEETING = {
    "delivered": frozenset({"message.delivered", "message.opened", "message.clicked"}),
    "opened": frozenset({"message.opened", "message.clicked"}),
    "clicked": frozenset({"message.clicked"}),
}


@dataclass(frozen=True, slots=True)
class CascadeEntry:
    channel: str
    template: str | None = None
    await_: str | None = None
    within_s: float | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    template: str | None = None
    cascade: tuple[CascadeEntry, ...] | None = None
    # Only users this holds for are split into the variant (segment against segment).
    audience: Expression | None = None


@dataclass(frozen=True, slots=True)
class WaitOp:
    path: str
    delay_s: float = 0.0
    until: TextTemplate | None = None
    offset_s: float = 0.0
    at: time | None = None


@dataclass(frozen=True, slots=True)
class SendOp:
    path: str
    template: str | None
    cascade: tuple[CascadeEntry, ...]
    variants: tuple[Variant, ...] = ()


@dataclass(frozen=True, slots=True)
class WaitForOp:
    path: str
    event: str
    cond: Expression | None
    timeout_s: float | None
    on_event_pc: int
    on_timeout_pc: int


@dataclass(frozen=True, slots=True)
class BranchOp:
    path: str
    cond: Expression
    else_pc: int


@dataclass(frozen=True, slots=True)
class JumpOp:
    path: str
    target: int


@dataclass(frozen=True, slots=True)
class StopOp:
    path: str


Op = WaitOp | SendOp | WaitForOp | BranchOp | JumpOp | StopOp
