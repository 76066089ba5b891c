"""PostgresStore's reads for the API and the runtime: interests, profiles, messages,
instances, rule versions and gauges."""

from __future__ import annotations

from engine.core.model import Instance, Message
from engine.store.postgres_core import INSTANCE_SQL, MESSAGE_SQL, PostgresCore
from engine.store.rows import instance_from, message_from


class PostgresReads(PostgresCore):
    async def interested_users(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT user_id FROM interests "
            "WHERE product_id = $1 AND kind = ANY($2::text[]) "
            "AND (kind <> 'viewed' OR updated_at >= $3) AND user_id > $4 "
            "ORDER BY user_id LIMIT $5",
            product_id,
            list(kinds),
            viewed_since,
            after,
            limit,
        )
        return [r[0] for r in rows]

    async def profile_ids(self, after: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT user_id FROM profiles WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            after,
            limit,
        )
        return [r[0] for r in rows]

    async def message(self, message_id: str) -> Message | None:
        row = await self.pool.fetchrow(f"{MESSAGE_SQL} WHERE id = $1", message_id)
        return message_from(tuple(row)) if row is not None else None

    async def message_by_provider_id(self, provider_id: str) -> Message | None:
        row = await self.pool.fetchrow(
            f"{MESSAGE_SQL} WHERE provider_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
            provider_id,
        )
        return message_from(tuple(row)) if row is not None else None

    async def instances_of(self, user_id: str, limit: int = 200) -> list[Instance]:
        rows = await self.pool.fetch(
            f"{INSTANCE_SQL} WHERE user_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [instance_from(tuple(r)) for r in rows]

    async def save_rule_version(
        self, version: str, rule_id: str, path: str, source: str, now: float
    ) -> None:
        await self.pool.execute(
            "INSERT INTO rule_versions (version, rule_id, path, source, loaded_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            version,
            rule_id,
            path,
            source,
            now,
        )

    async def rule_source(self, version: str) -> tuple[str, str] | None:
        row = await self.pool.fetchrow(
            "SELECT path, source FROM rule_versions WHERE version = $1", version
        )
        return (row[0], row[1]) if row is not None else None

    async def active_versions(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT rule_id, rule_version FROM instances WHERE status = 'active'"
        )
        return [(r[0], r[1]) for r in rows]

    async def counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(
            "SELECT (SELECT count(*) FROM instances WHERE status = 'active'), "
            "(SELECT count(*) FROM instances WHERE due_at IS NOT NULL), "
            "(SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')), "
            "(SELECT count(*) FROM inbox)"
        )
        assert row is not None
        active, timers, queued, inbox = row
        return {
            "active_instances": active,
            "pending_timers": timers,
            "queued_messages": queued,
            "inbox": inbox,
        }
