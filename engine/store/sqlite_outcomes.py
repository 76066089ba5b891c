"""SqliteStore's bulk writes of the dispatcher's answers: one transaction per batch."""

from __future__ import annotations

from engine.store.sqlite_core import SqliteCore, serialized


class SqliteOutcomes(SqliteCore):
    @serialized
    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        """(message id, outcome JSON) pairs stored as answered, in one transaction."""
        if not answers:
            return
        sql = (
            "UPDATE messages SET status = 'answered', outcome = ? "
            "WHERE id = ? AND status = 'sending'"
        )
        await self._script([(sql, [(outcome, mid) for mid, outcome in answers], True)])
