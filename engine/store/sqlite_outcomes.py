"""SqliteStore's bulk writes of the dispatcher's answers: one transaction per batch."""

from __future__ import annotations

from engine.store.sqlite_core import SqliteCore, serialized


class SqliteOutcomes(SqliteCore):
    @serialized
    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        """(message id, outcome JSON) pairs stored as answered, in one transaction."""
        if not answers:
            return
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(
                "UPDATE messages SET status = 'answered', outcome = ? "
                "WHERE id = ? AND status = 'sending'",
                [(outcome, mid) for mid, outcome in answers],
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
