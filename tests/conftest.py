"""Fixtures for every test. (Helpers that tests import are in tests/helpers.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_asyncio import is_async_test

from engine.runtime.logs import configure
from engine.store import Store, open_store


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    configure(level="warning", fmt="console")


@pytest.fixture(autouse=True)
def verify_cleanup(request: pytest.FixtureRequest) -> None:
    """An async test fails when it leaves tasks running in its event loop (as Home
    Assistant's verify_cleanup): pytest-asyncio would cancel them without a word when it
    closes the loop, hiding a daemon part that outlives its stop()."""
    if is_async_test(request.node):
        request.getfixturevalue("no_lingering_tasks")


@pytest.fixture
async def no_lingering_tasks() -> AsyncIterator[None]:
    """Runs in the test's loop; set up before the test's other fixtures, so its check comes
    after their teardown (a daemon fixture's stop()) and before the loop is closed."""
    before = asyncio.all_tasks()
    yield
    lingering = asyncio.all_tasks() - before - {asyncio.current_task()}
    if lingering:
        names = "\n  ".join(sorted(repr(task) for task in lingering))
        for task in lingering:
            task.cancel()  # the loop's close gathers them
        pytest.fail(f"{len(lingering)} task(s) still running after the test:\n  {names}")


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store's URL on each store: a SQLite file, a PostgreSQL schema of its own."""
    # Imported here: test_cleanup_check runs this conftest where `tests` is no package.
    from tests.pgdb import pg_schema

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kaskad.db"
    else:
        async with pg_schema() as pg_url:
            yield pg_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()
