"""PostgresStore's bulk writes of the dispatcher's answers: one statement per batch."""

from __future__ import annotations

from engine.store.postgres_core import PostgresCore, retrying


class PostgresOutcomes(PostgresCore):
    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        """(message id, outcome JSON) pairs stored as answered, in one transaction."""
        if not answers:
            return
        # As record_outcome: retried on a fresh connection when the database drops this
        # one, and only for sends this replica still holds (a lapsed lease gave them away).
        me = await self._me()
        await retrying(
            self.pool,
            "UPDATE messages AS m SET status = 'answered', outcome = a.outcome "
            "FROM unnest($1::text[], $2::text[]) AS a(id, outcome) "
            "WHERE m.id = a.id AND m.status = 'sending' AND m.claimed_by = $3",
            [mid for mid, _ in answers],
            [outcome for _, outcome in answers],
            me,
        )
