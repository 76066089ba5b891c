"""Whether the store's writes go through: /readyz answers 503 while the last write failed
(a full disk, a database locked by another process, PostgreSQL gone) until one succeeds."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from engine.store.base import ConcurrentUpdate

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W", bound="WriteHealth")


class WriteHealth:
    # Why the last write failed; None once one succeeds (or before any failed).
    write_error: str | None = None


def records_writes(
    fn: Callable[Concatenate[W, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[W, P], Coroutine[Any, Any, R]]:
    """Note the outcome of a write in the store's write_error. A save refused because
    another replica changed the user (ConcurrentUpdate) is no failure of the store."""

    async def recorded(self: W, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await fn(self, *args, **kwargs)
        except ConcurrentUpdate:
            raise
        except Exception as exc:
            self.write_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise
        self.write_error = None
        return result

    functools.update_wrapper(recorded, fn)
    return recorded
