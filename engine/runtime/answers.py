"""The dispatcher's answers on their way to the store, written in batches: every answer
that arrives while a batch is being written goes into the next one, so a busy channel
costs one transaction per batch instead of one per message, and a lone answer is written
at once. Each sender waits until its own answer is stored (stored before the engine hears
of it)."""

from __future__ import annotations

import asyncio

from engine.store.base import Store

MAX_BATCH = 1000


class Answers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, message_id: str, outcome: str) -> None:
        """Store the provider's answer (JSON); returns once it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((message_id, outcome, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        # Shielded: a sender cancelled while its answer is being written does not cancel
        # the batch (the answer is stored, and applied at the next start).
        await asyncio.shield(fut)

    async def _write(self) -> None:
        await asyncio.sleep(0)  # answers ready at this instant join the first batch
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self.store.record_outcomes([(mid, outcome) for mid, outcome, _ in batch])
            except Exception as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except BaseException:
                for _, _, fut in batch + self._pending:
                    fut.cancel()
                self._pending = []
                raise
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
