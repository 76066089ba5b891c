"""SqliteStore's user search index (profile_addresses) and per-user event log (user_events),
both written inside save's transaction: the dashboard finds a user by email or phone from
an index and shows their own events beside what kaskad did."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import aiosqlite

from engine.core.changes import Changes
from engine.store.sqlite_core import Op
from engine.store.user_log import USER_EVENTS_KEEP, LoggedEvent, event_row, logged

# The user's next number is one past their last (a seek to the end of their key range);
# the trim drops the number USER_EVENTS_KEEP back from the last, by the key.
_INSERT = (
    "INSERT INTO user_events (user_id, n, at, type, event_id, data) "
    "SELECT ?1, coalesce(max(n), 0) + 1, ?2, ?3, ?4, ?5 FROM user_events WHERE user_id = ?1"
)
_TRIM = (
    "DELETE FROM user_events WHERE user_id = ?1 AND n <= "
    f"(SELECT max(n) FROM user_events WHERE user_id = ?1) - {USER_EVENTS_KEEP}"
)


class SqliteUsers:
    """A mixin of SqliteStore: it has the connection and the lock that orders its use."""

    db: aiosqlite.Connection
    _lock: asyncio.Lock

    def _user_row_ops(self, changes: Changes) -> list[Op]:
        """Statements for save's transaction: erased users' rows go, changed addresses are
        replaced, events are logged and each of their users' logs cut to the newest
        USER_EVENTS_KEEP."""
        ops: list[Op] = []
        if changes.erased_users:
            gone = [(u,) for u in changes.erased_users]
            ops.append(("DELETE FROM profile_addresses WHERE user_id = ?", gone, True))
            ops.append(("DELETE FROM user_events WHERE user_id = ?", gone, True))
        if changes.addresses:
            ops.append(
                (
                    "DELETE FROM profile_addresses WHERE user_id = ?",
                    [(u,) for u in changes.addresses],
                    True,
                )
            )
            ops.append(
                (
                    "INSERT OR IGNORE INTO profile_addresses (kind, value, user_id) "
                    "VALUES (?, ?, ?)",
                    [(k, v, u) for u, found in changes.addresses.items() for k, v in found],
                    True,
                )
            )
        if changes.user_events:
            ops.append((_INSERT, [event_row(e) for e in changes.user_events], True))
            ops.append((_TRIM, [(u,) for u in {e.user_id for e in changes.user_events}], True))
        return ops

    async def find_users(self, kind: str, value: str, limit: int = 20) -> list[str]:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT user_id FROM profile_addresses WHERE kind = ? AND value = ? "
                "ORDER BY user_id LIMIT ?",
                (kind, value, limit),
            )
        return [r[0] for r in rows]

    async def user_events(
        self, user_id: str, *, types: Collection[str] = (), limit: int = USER_EVENTS_KEEP
    ) -> list[LoggedEvent]:
        sql = "SELECT at, type, event_id, data FROM user_events WHERE user_id = ?"
        params: list[object] = [user_id]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params.extend(types)
        async with self._lock:
            rows = await self.db.execute_fetchall(
                sql + " ORDER BY n DESC LIMIT ?", [*params, limit]
            )
        return [logged(r) for r in rows]

    async def forget_user_events_before(self, when: float) -> int:
        async with self._lock:
            cur = await self.db.execute("DELETE FROM user_events WHERE at < ?", (when,))
        return cur.rowcount
