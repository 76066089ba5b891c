"""The channel interface: limits as data, one async send, a typed outcome."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

OutcomeKind = Literal["accepted", "retry", "reject_recipient", "reject_message", "config_error"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a provider's answer means; only the dispatcher decides what to do about it."""

    kind: OutcomeKind
    provider_id: str | None = None
    after_s: float | None = None
    detail: str = ""
    # For reject_recipient: which addresses are dead (all the message's when empty).
    dead_addresses: tuple[str, ...] = ()
    opt_out: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "provider_id": self.provider_id,
                "after_s": self.after_s,
                "detail": self.detail,
                "dead": list(self.dead_addresses),
                "opt_out": self.opt_out,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        return cls(
            data["kind"],
            provider_id=data.get("provider_id"),
            after_s=data.get("after_s"),
            detail=data.get("detail", ""),
            dead_addresses=tuple(data.get("dead", ())),
            opt_out=bool(data.get("opt_out")),
        )

    @classmethod
    def accepted(cls, provider_id: str, detail: str = "") -> Outcome:
        return cls("accepted", provider_id=provider_id, detail=detail)

    @classmethod
    def retry(cls, after_s: float | None = None, detail: str = "") -> Outcome:
        return cls("retry", after_s=after_s, detail=detail)

    @classmethod
    def reject_recipient(
        cls, detail: str = "", *, dead: tuple[str, ...] = (), opt_out: bool = False
    ) -> Outcome:
        return cls("reject_recipient", detail=detail, dead_addresses=dead, opt_out=opt_out)

    @classmethod
    def reject_message(cls, detail: str = "") -> Outcome:
        return cls("reject_message", detail=detail)

    @classmethod
    def config_error(cls, detail: str = "") -> Outcome:
        return cls("config_error", detail=detail)


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_s: float = 10.0
    rate_per_s: float | None = None
    concurrency: int = 10
    max_retries: int = 5
    retry_for_s: float = 24 * 3600.0  # the dispatcher's; the adapter does not read it


@dataclass(slots=True)
class OutboundMessage:
    """A rendered message on its way to one recipient's addresses on one channel."""

    id: str
    channel: str
    user_id: str
    rule: str
    category: str
    addresses: list[Any]
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Channel(Protocol):
    name: str
    provider: str
    limits: Limits

    async def send(self, message: OutboundMessage) -> Outcome: ...

    async def close(self) -> None: ...
