"""Storage URLs (SQLAlchemy's convention) and the store each one opens."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.lang.config import StorageConfig
from engine.store.base import Store


@dataclass(frozen=True)
class PgSettings:
    """PostgreSQL's storage.* settings: the pool's size, the client's wait for a command
    and the server's statement_timeout, in seconds."""

    pool_size: int = 10
    command_timeout_s: float = 30.0
    statement_timeout_s: float = 30.0
    lease_s: float = 10.0  # a replica's claims lapse this long after its last heartbeat

    @classmethod
    def of(cls, storage: StorageConfig) -> PgSettings:
        return cls(
            storage.pool_size,
            storage.command_timeout_s,
            storage.statement_timeout_s,
            storage.lease_s,
        )


def redact(url: str) -> str:
    """The URL with its password (in the authority or as ?password=) masked."""
    url = re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def sqlite_path(url: str) -> str:
    """sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory: (SQLAlchemy)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"invalid sqlite url '{url}': expected sqlite:///path")
    path = url[len("sqlite:///") :]
    if path in ("", ":memory:"):
        return ":memory:"
    return path


async def open_store(url: str, *, exclusive: bool = False, pg: PgSettings | None = None) -> Store:
    """A store for a SQLAlchemy-style URL: sqlite:///rel, sqlite:////abs, sqlite:///:memory:,
    or postgresql://user:password@host:5432/db (postgres:// too), shared by replicas.
    exclusive: the daemon's store (one daemon per SQLite file; replicas share PostgreSQL,
    each renewing its lease on its claims every lease_s / 4)."""
    if url.startswith("sqlite:"):
        from engine.store.sqlite import SqliteStore

        return await SqliteStore.open(url, exclusive=exclusive)
    if url.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
        from engine.store.postgres import PostgresStore

        return await PostgresStore.open(url, pg or PgSettings())
    raise ValueError(
        f"unsupported storage url '{redact(url)}': expected sqlite:///path or "
        "postgresql://user:password@host:5432/database"
    )
