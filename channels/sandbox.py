"""The sandbox channel: records what would be sent and accepts it. The default provider."""

from __future__ import annotations

from .base import Limits, OutboundMessage, Outcome


class SandboxChannel:
    provider = "sandbox"

    def __init__(self, name: str, limits: Limits | None = None, keep: int = 10_000) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.sent: list[OutboundMessage] = []
        self._keep = keep

    async def send(self, message: OutboundMessage) -> Outcome:
        return self.accept(message)

    def accept(self, message: OutboundMessage) -> Outcome:
        self.sent.append(message)
        if len(self.sent) > self._keep:
            del self.sent[: len(self.sent) - self._keep]
        return Outcome.accepted(f"sandbox-{message.id}")

    async def close(self) -> None:
        return None
