"""The autouse check of tests/conftest.py: an async test that leaves a task running fails
(at teardown, naming the task); one that cleans up, and a sync test, pass."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""
TESTS = """
import asyncio

import pytest


@pytest.fixture
async def server():
    task = asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="serving")
    yield
    task.cancel()  # its own teardown ends it: not a leak


async def test_leaves_a_task() -> None:
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten")


async def test_ends_what_it_started(server: None) -> None:
    await asyncio.sleep(0)


def test_sync() -> None:
    asyncio.run(asyncio.sleep(0))
"""


def test_a_task_left_running_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaks=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_task*",
            "*1 task(s) still running after the test:*",
            "*name='forgotten'*",
        ]
    )
