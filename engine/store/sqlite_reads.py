"""SqliteStore's reads for the API and the runtime: interests, profiles, messages,
instances, rule versions and gauges."""

from __future__ import annotations

from engine.core.model import Instance, Message
from engine.store.rows import instance_from, message_from
from engine.store.sqlite_core import INSTANCE_SQL, MESSAGE_SQL, SqliteCore, serialized


class SqliteReads(SqliteCore):
    @serialized
    async def interested_users(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        marks = ",".join("?" * len(kinds))
        return [
            r[0]
            for r in await self._rows(
                "SELECT DISTINCT user_id FROM interests "
                f"WHERE product_id = ? AND kind IN ({marks}) "
                "AND (kind != 'viewed' OR updated_at >= ?) AND user_id > ? "
                "ORDER BY user_id LIMIT ?",
                (product_id, *kinds, viewed_since, after, limit),
            )
        ]

    @serialized
    async def profile_ids(self, after: str, limit: int) -> list[str]:
        return [
            r[0]
            for r in await self._rows(
                "SELECT user_id FROM profiles WHERE user_id > ? ORDER BY user_id LIMIT ?",
                (after, limit),
            )
        ]

    @serialized
    async def message(self, message_id: str) -> Message | None:
        rows = await self._rows(f"{MESSAGE_SQL} WHERE id = ?", (message_id,))
        return message_from(rows[0]) if rows else None

    @serialized
    async def message_by_provider_id(self, provider_id: str) -> Message | None:
        rows = await self._rows(
            f"{MESSAGE_SQL} WHERE provider_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (provider_id,),
        )
        return message_from(rows[0]) if rows else None

    @serialized
    async def instances_of(self, user_id: str, limit: int = 200) -> list[Instance]:
        rows = await self._rows(
            f"{INSTANCE_SQL} WHERE user_id = ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (user_id, limit),
        )
        return [instance_from(r) for r in rows]

    @serialized
    async def save_rule_version(
        self, version: str, rule_id: str, path: str, source: str, now: float
    ) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO rule_versions VALUES (?, ?, ?, ?, ?)",
            (version, rule_id, path, source, now),
        )

    @serialized
    async def rule_source(self, version: str) -> tuple[str, str] | None:
        rows = await self._rows(
            "SELECT path, source FROM rule_versions WHERE version = ?", (version,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    @serialized
    async def active_versions(self) -> list[tuple[str, str]]:
        rows = await self._rows(
            "SELECT DISTINCT rule_id, rule_version FROM instances WHERE status = 'active'"
        )
        return [(r[0], r[1]) for r in rows]

    @serialized
    async def counts(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT (SELECT count(*) FROM instances WHERE status = 'active'), "
            "(SELECT count(*) FROM instances WHERE due_at IS NOT NULL), "
            "(SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')), "
            "(SELECT count(*) FROM inbox)"
        )
        active, timers, queued, inbox = rows[0]
        return {
            "active_instances": active,
            "pending_timers": timers,
            "queued_messages": queued,
            "inbox": inbox,
        }
