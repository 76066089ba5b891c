"""Where the processor gets users' state for a unit of work, and where it writes it back.

The daemon loads each unit's users from the store and commits every unit (StoreStates).
`simulate` keeps every user in memory for the run and writes the store behind
(ResidentStates). The Processor drives both the same way.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable
from typing import Protocol

from engine.core.changes import Changes
from engine.core.model import UserState, new_profile
from engine.core.workspace import Workspace
from engine.store.base import Store

Timer = tuple[float, str, str]  # (due_at, instance id, user id)


class States(Protocol):
    store: Store

    async def workspace(self, user_ids: list[str], now: float, *, starts: bool) -> Workspace:
        """A unit of work holding these users (starts=False: nothing will start, so the
        cooldown history need not be read)."""
        ...

    async def commit(self, ws: Workspace) -> Changes:
        """Write what the unit changed; returns it. Raises when nothing could be written."""
        ...

    def discard(self, ws: Workspace) -> None:
        """The unit failed before its commit: forget what it changed in memory."""
        ...

    async def due(self, now: float, limit: int) -> list[Timer]: ...

    async def next_due(self) -> float | None: ...

    async def interested(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]: ...

    async def profiles(self, after: str, limit: int) -> list[str]: ...

    async def settle(self) -> None:
        """Make every committed unit visible to the store's own queries (jobs)."""
        ...


class StoreStates:
    """Every unit of work loads its users from the store and commits there (the daemon)."""

    def __init__(self, store: Store, messages_s: float, starts_since: Callable[[float], float]):
        self.store = store
        self._messages_s = messages_s
        self._starts_since = starts_since

    async def workspace(self, user_ids: list[str], now: float, *, starts: bool) -> Workspace:
        ws = Workspace(now=now)
        if user_ids:
            ws.users = await self.store.load_users(
                sorted(set(user_ids)),
                messages_since=now - self._messages_s,
                starts_since=self._starts_since(now) if starts else math.inf,
            )
        return ws

    async def commit(self, ws: Workspace) -> Changes:
        changes = ws.take_changes()
        await self.store.save(changes)
        return changes

    def discard(self, ws: Workspace) -> None:
        ws.take_changes()  # the users are read afresh by the next unit

    async def due(self, now: float, limit: int) -> list[Timer]:
        return await self.store.due_instances(now, limit)

    async def next_due(self) -> float | None:
        return await self.store.next_due()

    async def interested(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        return await self.store.interested_users(product_id, kinds, viewed_since, after, limit)

    async def profiles(self, after: str, limit: int) -> list[str]:
        return await self.store.profile_ids(after, limit)

    async def settle(self) -> None:
        return None  # every unit is committed already


class ResidentStates:
    """Every user stays in memory for the run, in one workspace; the store is written
    behind (one save in flight at most, saves in order), and read only after every earlier
    save landed (the interest index). For `simulate`, where this process is the only one."""

    def __init__(self, store: Store, *, flush_every: int = 20_000) -> None:
        self.store = store
        self.ws = Workspace(now=0.0)
        self._flush_every = flush_every
        self._pending = 0
        self._saving: asyncio.Future[None] | None = None
        self._sorted: list[str] = []  # user ids in order, rebuilt when users were added

    def user(self, uid: str) -> UserState:
        st = self.ws.users.get(uid)
        if st is None:
            st = UserState(uid, new_profile(uid, self.ws.now))
            st.profile_dirty = True
            self.ws.users[uid] = st
        return st

    async def workspace(self, user_ids: list[str], now: float, *, starts: bool) -> Workspace:
        self.ws.now = now
        for uid in user_ids:
            if uid not in self.ws.users:
                self.user(uid)
        return self.ws

    async def commit(self, ws: Workspace) -> Changes:
        if ws is not self.ws:
            # A unit of its own (a job's end): written now, after everything before it.
            await self.flush()
            changes = ws.take_changes()
            await self.store.save(changes)
            return changes
        # The changes stay in the workspace until the next flush: they are the write-behind.
        self._pending += 1
        if self._pending >= self._flush_every:
            await self.flush(wait=False)
        return Changes()

    def discard(self, ws: Workspace) -> None:
        return None  # nothing outside this process reads the resident state

    async def due(self, now: float, limit: int) -> list[Timer]:
        out: list[Timer] = []
        while len(out) < limit:
            timer = self.ws.next_timer()
            if timer is None or timer[0] > now:
                break
            out.append(self.ws.pop_timer())
        return out

    async def next_due(self) -> float | None:
        timer = self.ws.next_timer()
        return None if timer is None else timer[0]

    async def interested(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        await self.flush()  # the interest index must hold every earlier event
        return await self.store.interested_users(product_id, kinds, viewed_since, after, limit)

    async def profiles(self, after: str, limit: int) -> list[str]:
        if len(self._sorted) != len(self.ws.users):
            self._sorted = sorted(self.ws.users)
        start = bisect.bisect_right(self._sorted, after)
        return self._sorted[start : start + limit]

    async def settle(self) -> None:
        await self.flush()

    async def flush(self, *, wait: bool = True) -> None:
        """Write the workspace's changes behind. `wait=False` lets the engine go on while
        SQLite works; a read of the store, and the end of the run, wait for every save."""
        changes = self.ws.take_changes()
        self._pending = 0
        saving, self._saving = self._saving, None
        if saving is not None:
            await saving
        if not changes:
            return
        task = asyncio.ensure_future(self.store.save(changes))
        if wait:
            await task
        else:
            self._saving = task

    async def close(self) -> None:
        await self.flush()
