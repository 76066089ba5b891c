"""Durable timers: rows in the store, fired in batches by one waiter on the daemon's clock."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from engine.clock import VirtualClock, parse_time
from engine.daemon import Daemon

from .helpers import START, Client, make_config
from .proc import Daemons, free_port, http_json, http_session, poll, write_config

WAIT_RULE = """\
rule: {name}
trigger:
  event: {event}
steps:
  - wait: {wait}
  - stop: true
"""


def rules_with(tmp_path: Path, **waits: tuple[str, str]) -> Path:
    """A rules folder with one `wait, then stop` rule per name: (trigger event, wait)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, (event, wait) in waits.items():
        (rules / f"{name}.yaml").write_text(WAIT_RULE.format(name=name, event=event, wait=wait))
    return rules


def instances(db: Path) -> list[tuple[str, str, float | None, float | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT user_id, status, due_at, ended_at FROM instances ORDER BY user_id"
        ).fetchall()


async def test_timers_due_at_one_instant_fire_once_each_in_batches(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, nudge=("signup.done", "1h"))
    daemon = Daemon(make_config(tmp_path, rules), VirtualClock(START), background=False)
    await daemon.start()
    daemon.processor.timer_batch = 7  # 30 timers due together: five batches, the last short
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            users = [f"u{n:02}" for n in range(30)]
            events = [{"type": "signup.done", "user_id": u} for u in users]
            assert (await client.post_events(events))[0] == 202
            await client.advance(0)
            assert {due for _, _, due, _ in instances(tmp_path / "kaskad.db")} == {START + 3600}
            await client.advance(3599)
            assert daemon.processor.counters.timers == 0
            await client.advance(1)
        assert daemon.processor.counters.timers == 30
        assert instances(tmp_path / "kaskad.db") == [
            (u, "completed", None, START + 3600) for u in users
        ]
        assert await daemon.store.next_due() is None
    finally:
        await daemon.stop()


async def test_a_timer_loads_no_cooldowns_and_keeps_the_instance_identity(
    tmp_path: Path,
) -> None:
    # Firing a timer updates the instance row in place: its identity columns (and the
    # instances_starts index on them) stay as they were when it started.
    rules = rules_with(tmp_path, nudge=("signup.done", "10m"))
    daemon = Daemon(make_config(tmp_path, rules), VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            await client.post_events({"type": "signup.done", "user_id": "u1", "id": "e1"})
            await client.advance(0)
            with sqlite3.connect(tmp_path / "kaskad.db") as conn:
                before = conn.execute("SELECT rowid, * FROM instances").fetchall()
            await client.advance(600)
            with sqlite3.connect(tmp_path / "kaskad.db") as conn:
                conn.row_factory = sqlite3.Row
                after = conn.execute("SELECT rowid, * FROM instances").fetchall()
        assert len(before) == len(after) == 1
        row = dict(after[0])
        assert (row["rowid"], row["id"], row["user_id"], row["started_at"]) == (
            before[0][0],
            before[0][1],
            "u1",
            START,
        )
        assert (row["status"], row["due_at"], row["end_reason"]) == ("completed", None, "stop")
        loaded = await daemon.store.load_users(
            ["u1"], messages_since=0.0, starts_since=float("inf")
        )
        assert loaded["u1"].last_starts == {}
        loaded = await daemon.store.load_users(["u1"], messages_since=0.0, starts_since=0.0)
        assert loaded["u1"].last_starts == {("nudge", ""): START}
    finally:
        await daemon.stop()


async def _instance(session: aiohttp.ClientSession, url: str, user: str) -> dict[str, Any] | None:
    """The user's one instance, None before the engine has started it."""
    status, body = await http_json(session, "GET", f"{url}/v1/users/{user}/timeline")
    assert status == 200, body
    assert len(body["instances"]) <= 1, body
    return dict(body["instances"][0]) if body["instances"] else None


async def test_the_waiter_sleeps_to_the_next_timer_and_wakes_for_an_earlier_one(
    tmp_path: Path,
) -> None:
    # The real daemon on the real clock: a timer an hour away puts the waiter to sleep;
    # an event that sets a 1 s timer must wake it, and that timer fires on time.
    rules = rules_with(tmp_path, slow=("slow.start", "1h"), quick=("quick.start", "1s"))
    port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"url": f"sqlite:///{tmp_path}/kaskad.db"},
            "rules": {"path": str(rules), "watch": False},
            "logging": {"format": "json", "level": "info"},
        },
    )
    async with Daemons() as daemons, http_session() as session:
        daemon = await daemons.start(config, port)
        await daemon.started()
        url = daemon.url
        status, _ = await http_json(
            session, "POST", f"{url}/v1/events", json={"type": "slow.start", "user_id": "far"}
        )
        assert status == 202

        async def waiting(user: str) -> dict[str, Any] | None:
            inst = await _instance(session, url, user)
            return inst if inst and inst["waiting"] == "wait" else None

        await poll(lambda: waiting("far"), within=10, what="the 1 h timer")
        status, _ = await http_json(
            session, "POST", f"{url}/v1/events", json={"type": "quick.start", "user_id": "soon"}
        )
        assert status == 202

        async def ended(user: str) -> dict[str, Any] | None:
            inst = await _instance(session, url, user)
            return inst if inst and inst["status"] != "active" else None

        fired = await poll(lambda: ended("soon"), within=15, what="the 1 s timer to fire")
        assert fired["status"] == "completed"
        waited = parse_time(fired["ended_at"]) - parse_time(fired["started_at"])
        assert 1.0 <= waited < 5.0, waited
        far = await _instance(session, url, "far")
        assert far is not None and (far["status"], far["waiting"]) == ("active", "wait")
        assert await daemon.terminate() == 0
