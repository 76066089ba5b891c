"""storage.* settings: validated in the config, applied to the PostgreSQL pool (its size,
the client's command timeout, the server's statement_timeout) by the daemon and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.errors import LoadError
from engine.lang.config import parse_config
from engine.store.postgres import PostgresStore
from engine.store.urls import PgSettings
from tests.daemon.helpers import START, make_config
from tests.helpers import RULES
from tests.pgdb import pg_schema


def problems(text: str) -> list[str]:
    with pytest.raises(LoadError) as info:
        parse_config(text, "config.yaml", env={})
    return [str(p) for p in info.value.problems]


def test_defaults() -> None:
    storage = parse_config("").storage
    assert (storage.pool_size, storage.command_timeout_s, storage.statement_timeout_s) == (
        10,
        30.0,
        30.0,
    )
    assert PgSettings.of(storage) == PgSettings(10, 30.0, 30.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pool_size: 0", "storage.pool_size: Input should be greater than 0"),
        ("pool_size: 2.5", "storage.pool_size: Input should be a valid integer"),
        ("command_timeout_s: -1", "storage.command_timeout_s: Input should be greater than 0"),
        ("statement_timeout_s: 0", "storage.statement_timeout_s: Input should be greater than 0"),
        ("statement_timeout_s: soon", "storage.statement_timeout_s: Input should be a valid"),
        ("message_retention: 1d", "storage.message_retention: must be a duration of at least 30d"),
        ("event_retention: 0s", "storage.event_retention: must be a positive duration"),
    ],
)
def test_bad_settings_are_named(line: str, expected: str) -> None:
    found = problems(f"storage:\n  {line}\n")
    assert len(found) == 1 and found[0].startswith("config.yaml:2:") and expected in found[0]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_schema() as url:
        yield url


async def test_the_pool_takes_the_settings(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, PgSettings(3, 10.0, 0.2))
    try:
        assert store.pool.get_max_size() == 3
        assert await store.pool.fetchval("SHOW statement_timeout") == "200ms"
        with pytest.raises(asyncpg.QueryCanceledError):  # the server ends it at 0.2 s
            await store.pool.fetchval("SELECT pg_sleep(5)")
    finally:
        await store.close()
    store = await PostgresStore.open(pg_url, PgSettings(1, 0.2, 30.0))
    try:
        with pytest.raises(TimeoutError):  # the client stops waiting at 0.2 s
            await store.pool.fetchval("SELECT pg_sleep(5)")
    finally:
        await store.close()


async def test_the_daemon_opens_its_store_with_them(tmp_path: Path, pg_url: str) -> None:
    config = make_config(tmp_path, RULES, storage_url=pg_url)
    config.storage.pool_size, config.storage.statement_timeout_s = 2, 1.5
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    try:
        store = daemon.store
        assert isinstance(store, PostgresStore)
        assert store.pool.get_max_size() == 2
        assert await store.pool.fetchval("SHOW statement_timeout") == "1500ms"
    finally:
        await daemon.stop()
