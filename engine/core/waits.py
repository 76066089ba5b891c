"""What a running instance waits on, as typed states (stored as JSON with the instance)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Waiting:
    """A `wait` step's timer."""

    kind = "wait"


@dataclass(frozen=True, slots=True)
class WaitingFor:
    """A `wait_for` step: its event, or its timeout timer."""

    kind = "wait_for"


@dataclass(frozen=True, slots=True)
class Deferred:
    """A send deferred by quiet hours to their end; `idx` is the cascade entry to go on at."""

    idx: int
    after_await: bool = False
    kind = "defer"


@dataclass(frozen=True, slots=True)
class Sending:
    """A message with the dispatcher; its answer moves the cascade on."""

    idx: int
    msg: str
    after_await: bool = False
    kind = "sending"


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A sent message's reaction (`await: opened` ...) within the entry's `within`."""

    idx: int
    msg: str
    reaction: str  # delivered | opened | clicked
    kind = "await"


WaitState = Waiting | WaitingFor | Deferred | Sending | Awaiting


def state_json(state: WaitState | None) -> dict[str, Any] | None:
    """The stored form: {"kind": ...} plus the state's fields (`await` for the reaction)."""
    if state is None:
        return None
    if isinstance(state, Waiting | WaitingFor):
        return {"kind": state.kind}
    if isinstance(state, Deferred):
        return {"kind": state.kind, "idx": state.idx, "after_await": state.after_await}
    if isinstance(state, Sending):
        return {
            "kind": state.kind,
            "idx": state.idx,
            "msg": state.msg,
            "after_await": state.after_await,
        }
    return {"kind": state.kind, "idx": state.idx, "msg": state.msg, "await": state.reaction}


def state_from(data: Any) -> WaitState | None:
    """A stored state back; None for none (or a shape this version does not know)."""
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if kind == "wait":
        return Waiting()
    if kind == "wait_for":
        return WaitingFor()
    if kind == "defer":
        return Deferred(int(data["idx"]), bool(data.get("after_await", False)))
    if kind == "sending":
        return Sending(int(data["idx"]), str(data["msg"]), bool(data.get("after_await", False)))
    if kind == "await":
        return Awaiting(int(data["idx"]), str(data["msg"]), str(data["await"]))
    return None
