"""Fixtures for every test. (Helpers that tests import are in tests/helpers.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pytest_asyncio import is_async_test

from engine.runtime.logs import configure


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
