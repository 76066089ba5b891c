"""PostgresStore's user search index (profile_addresses) and per-user event log
(user_events), both written inside save's transaction (see sqlite_users)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import asyncpg

from engine.core.changes import Changes
from engine.store.user_log import USER_EVENTS_KEEP, LoggedEvent, event_row, logged

# Each user's events are numbered one past their last (see sqlite_users); the batch's own
# events in their order.
_INSERT = (
    "INSERT INTO user_events (user_id, n, at, type, event_id, data) "
    "SELECT e.uid, coalesce((SELECT max(n) FROM user_events WHERE user_id = e.uid), 0) "
    "+ row_number() OVER (PARTITION BY e.uid ORDER BY e.i), e.at, e.type, e.eid, e.data "
    "FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[]) "
    "WITH ORDINALITY e(uid, at, type, eid, data, i)"
)
# Per user by the key (a nested loop over the batch's users; a join against their max(n)
# made the planner hash the whole table).
_TRIM = (
    "DELETE FROM user_events e USING unnest($1::text[]) u(id) WHERE e.user_id = u.id "
    "AND e.n <= (SELECT max(n) FROM user_events WHERE user_id = u.id) - "
    f"{USER_EVENTS_KEEP}"
)


class PostgresUsers:
    """A mixin of PostgresStore: it has the pool."""

    pool: asyncpg.Pool

    async def _save_user_rows(self, conn: Any, changes: Changes) -> None:
        """Inside save's transaction (see SqliteUsers._save_user_rows)."""
        if changes.erased_users:
            gone = sorted(changes.erased_users)
            await conn.execute(
                "DELETE FROM profile_addresses WHERE user_id = ANY($1::text[])", gone
            )
            await conn.execute("DELETE FROM user_events WHERE user_id = ANY($1::text[])", gone)
        if changes.addresses:
            await conn.execute(
                "DELETE FROM profile_addresses WHERE user_id = ANY($1::text[])",
                sorted(changes.addresses),
            )
            rows = sorted({(k, v, u) for u, found in changes.addresses.items() for k, v in found})
            if rows:
                await conn.execute(
                    "INSERT INTO profile_addresses (kind, value, user_id) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) "
                    "ON CONFLICT DO NOTHING",
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                )
        if changes.user_events:
            rows_ = [event_row(e) for e in changes.user_events]
            await conn.execute(
                _INSERT,
                [r[0] for r in rows_],
                [r[1] for r in rows_],
                [r[2] for r in rows_],
                [r[3] for r in rows_],
                [r[4] for r in rows_],
            )
            await conn.execute(_TRIM, sorted({e.user_id for e in changes.user_events}))

    async def find_users(self, kind: str, value: str, limit: int = 20) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT user_id FROM profile_addresses WHERE kind = $1 AND value = $2 "
            "ORDER BY user_id LIMIT $3",
            kind,
            value,
            limit,
        )
        return [r[0] for r in rows]

    async def user_events(
        self, user_id: str, *, types: Collection[str] = (), limit: int = USER_EVENTS_KEEP
    ) -> list[LoggedEvent]:
        rows = await self.pool.fetch(
            "SELECT at, type, event_id, data FROM user_events WHERE user_id = $1 "
            "AND (cardinality($2::text[]) = 0 OR type = ANY($2::text[])) "
            "ORDER BY n DESC LIMIT $3",
            user_id,
            list(types),
            limit,
        )
        return [logged(tuple(r)) for r in rows]

    async def forget_user_events_before(self, when: float) -> int:
        status = await self.pool.execute("DELETE FROM user_events WHERE at < $1", when)
        return int(status.split()[-1])
