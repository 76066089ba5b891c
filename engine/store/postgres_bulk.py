"""Many rows in one statement on PostgreSQL: a column of values per parameter, unnested on
the server (one execution, where asyncpg's executemany costs one per row)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn


def _array_type(column: str) -> str:
    if column.endswith("_at"):
        return "float8[]"
    return "int4[]" if column in ("pc", "attempts") else "text[]"


def upsert_arrays(table: str, columns: tuple[str, ...], key: str, also: str = "") -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE of every column, the rows as arrays."""
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    arrays = ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(columns, start=1))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}{also}"
    )


async def upsert_rows(conn: Conn, one: str, many: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows keyed by their first column: with distinct keys in one statement (`many`, from
    upsert_arrays); a batch naming a key twice (one statement cannot update a row twice)
    row by row, in order (`one`)."""
    if len(rows) > 1 and len({r[0] for r in rows}) == len(rows):
        await conn.execute(many, *[list(column) for column in zip(*rows, strict=True)])
    else:
        await conn.executemany(one, rows)
