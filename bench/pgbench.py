"""What the PostgreSQL benchmarks share: a schema of their own on the local server, dropped
afterwards. The server is KASKAD_BENCH_POSTGRES if set, else postgresql://127.0.0.1:5432/test
(the test suite's database)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg

DEFAULT_URL = "postgresql://127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("KASKAD_BENCH_POSTGRES", DEFAULT_URL)


def with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@contextlib.asynccontextmanager
async def pg_schema(prefix: str = "kaskad_bench") -> AsyncIterator[str]:
    """A storage URL whose search_path is a fresh schema; the schema goes at the end."""
    url = server_url()
    conn = await asyncpg.connect(url, timeout=10)
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
