"""PostgresStore's bulk writes of the dispatcher's answers: one statement per batch."""

from __future__ import annotations

from engine.store.postgres_core import PostgresCore


class PostgresOutcomes(PostgresCore):
    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        """(message id, outcome JSON) pairs stored as answered, in one transaction."""
        if not answers:
            return
        await self.pool.execute(
            "UPDATE messages AS m SET status = 'answered', outcome = a.outcome "
            "FROM unnest($1::text[], $2::text[]) AS a(id, outcome) "
            "WHERE m.id = a.id AND m.status = 'sending'",
            [mid for mid, _ in answers],
            [outcome for _, outcome in answers],
        )
