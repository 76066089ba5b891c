"""storage.message_retention: the daily retention job (03:17 UTC, a row in `jobs` taken
once per fire time) deletes messages older than the retention in bounded batches, on both
stores, on the virtual clock."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from engine.clock import VirtualClock, parse_time
from engine.core.changes import Changes
from engine.core.model import Message
from engine.daemon import Daemon
from engine.store import Store

from .helpers import START, Client, make_config
from .test_api import cart, profile

DAY = 86400.0


def message(mid: str, created_at: float, status: str) -> Message:
    return Message(
        mid,
        instance_id=f"i-{mid}",
        user_id="u1",
        step="1",
        rule_id="r1",
        channel="email",
        template="t",
        variant=None,
        category="marketing",
        status=status,
        created_at=created_at,
    )


async def test_the_store_deletes_old_messages_in_batches(store: Store) -> None:
    t0 = START
    old = [message(f"m{n}", t0 + n, "sent") for n in range(5)]
    kept = [message("q", t0, "queued"), message("new", t0 + 100, "sent")]
    await store.save(Changes(messages={m.id: m for m in [*old, *kept]}))
    assert await store.delete_messages_before(t0 + 50, 2) == 2  # the oldest two
    assert {m.id for m in await store.messages()} == {"m2", "m3", "m4", "q", "new"}
    assert await store.delete_messages_before(t0 + 50, 2) == 2
    assert await store.delete_messages_before(t0 + 50, 2) == 1
    assert await store.delete_messages_before(t0 + 50, 2) == 0
    # A queued message stays whatever its age (so do those in flight or answered).
    assert {m.id for m in await store.messages()} == {"q", "new"}


async def test_the_daily_job_deletes_messages_past_the_retention(
    tmp_path: Path, rules_dir: Path, store_url: str
) -> None:
    config = make_config(tmp_path, rules_dir, storage_url=store_url)
    config.storage.message_retention = "30d"
    clock = VirtualClock(START)
    daemon = Daemon(config, clock, background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(daemon, session)
            assert (await c.post_events([profile("u1"), cart("u1")]))[0] == 202
            await c.advance(3600)  # the cart reminder goes out
            await c.advance(10 * DAY)
            assert (await c.post_events([profile("u2"), cart("u2")]))[0] == 202
            await c.advance(3600)
            _, body = await c.admin("GET", "/v1/messages?rule=abandoned_cart&limit=100")
            assert {m["user_id"] for m in body["messages"]} == {"u1", "u2"}
            # Just before the fire time 32 days on, then past it: the job fires once and
            # takes the messages created more than 30 days before (u1's first ones).
            clock.advance_to(parse_time("2026-12-25T03:00:00Z"))
            await daemon.pump()
            _, body = await c.admin("GET", "/v1/messages?limit=100")
            before = sorted((m["id"], m["created_at"]) for m in body["messages"])
            await c.advance(20 * 60)
            _, body = await c.admin("GET", "/v1/messages?limit=100")
            after = sorted((m["id"], m["created_at"]) for m in body["messages"])
            cutoff = "2026-11-25T03:20:00Z"  # the fire time's run at 03:20, minus 30 days
            assert after == [(mid, at) for mid, at in before if at >= cutoff]
            assert len(after) < len(before) and any(at < "2026-11-24" for _, at in before)
    finally:
        await daemon.stop()
