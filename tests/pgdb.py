"""A PostgreSQL schema of its own for each test, on the local server, dropped afterwards.

The server is KASKAD_TEST_POSTGRES if set, else 127.0.0.1:5432, database `test`, trust
auth as the current user or `postgres`. When it cannot be reached the test is skipped, and
fails instead when CI=true (.ci/run starts the service, so there it must run).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

_CANDIDATES = (
    "postgresql://127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/test",
)
_working: str | None = None
_failure: str | None = None


def with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


async def _admin() -> tuple[asyncpg.Connection[asyncpg.Record], str]:
    """A connection to the test server and the URL it took; skips (or fails in CI)."""
    global _working, _failure
    configured = os.environ.get("KASKAD_TEST_POSTGRES")
    candidates = [configured] if configured else [_working or c for c in _CANDIDATES]
    if _failure is None:
        errors: list[str] = []
        for url in dict.fromkeys(candidates):
            try:
                conn = await asyncpg.connect(url, timeout=30)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            _working = url
            return conn, url
        _failure = "; ".join(errors)
    reason = f"PostgreSQL is not reachable ({_failure})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI starts it, so these tests must run", pytrace=False)
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A storage URL whose search_path is a fresh schema; the schema goes at the end."""
    conn, url = await _admin()
    schema = f"kaskad_test_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_search_path(url, schema)
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
