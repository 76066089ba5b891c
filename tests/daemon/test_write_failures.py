"""/readyz follows the store's writes: while they fail (here: the database locked by
another process) it answers 503 with the reason, although reads still work; once a write
goes through again it answers 200."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import asyncpg

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.store.sqlite import SqliteStore
from engine.store.urls import sqlite_path
from tests.pgdb import pg_schema

from .helpers import START, Client, make_config
from .test_api import cart


async def readyz_store(client: Client) -> tuple[int, str]:
    status, body = await client.request("GET", "/readyz")
    return status, body["checks"]["store"]


async def test_sqlite_locked_by_another_process(client: Client) -> None:
    store = client.daemon.store
    assert isinstance(store, SqliteStore)
    assert await readyz_store(client) == (200, "ok")
    # Wait a tenth of a second for the lock rather than five (what the test waits for).
    await store.db.execute("PRAGMA busy_timeout=100")
    rows = await store.db.execute_fetchall("SELECT file FROM pragma_database_list WHERE seq = 0")
    other = sqlite3.connect(sqlite_path(f"sqlite:///{next(iter(rows))[0]}"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        assert (await client.post_events([cart("u1", "e1")]))[0] == 503
        status, reason = await readyz_store(client)
        assert status == 503
        assert reason == "error: writes fail: OperationalError: database is locked"
        assert (await client.request("GET", "/healthz"))[0] == 200  # alive, not ready
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await readyz_store(client) == (200, "ok")  # its probe write went through
    assert await client.post_events([cart("u1", "e1")]) == (202, {"accepted": 1, "duplicates": 0})


async def test_postgres_tables_locked(tmp_path: Path, rules_dir: Path) -> None:
    async with pg_schema() as url:
        config = make_config(tmp_path, rules_dir, storage_url=url)
        config.storage.statement_timeout_s = 0.2
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                client = Client(daemon, session)
                assert await readyz_store(client) == (200, "ok")
                other = await asyncpg.connect(url)
                try:
                    async with other.transaction():
                        await other.execute("LOCK TABLE inbox, secrets IN EXCLUSIVE MODE")
                        assert (await client.post_events([cart("u1", "e1")]))[0] == 503
                        status, reason = await readyz_store(client)
                        assert status == 503
                        assert reason == (
                            "error: writes fail: QueryCanceledError: "
                            "canceling statement due to statement timeout"
                        )
                finally:
                    await other.close()
                assert await readyz_store(client) == (200, "ok")
                assert (await client.post_events([cart("u1", "e1")]))[0] == 202
        finally:
            await daemon.stop()
