"""The one explicit table of channel providers; registering a name twice is an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Channel, Limits

# A factory builds a channel from its name ("email"), its validated config keys and the
# shared aiohttp session (None for providers that need none). Raises ValueError naming
# the bad key.
Factory = Callable[[str, dict[str, Any], Limits, Any], Channel]

_PROVIDERS: dict[str, Factory] = {}


def register(provider: str, factory: Factory) -> None:
    if provider in _PROVIDERS:
        raise ValueError(f"channel provider '{provider}' is registered twice")
    _PROVIDERS[provider] = factory


def providers() -> list[str]:
    return sorted(_PROVIDERS)


def factory(provider: str) -> Factory:
    try:
        return _PROVIDERS[provider]
    except KeyError:
        raise ValueError(
            f"unknown channel provider '{provider}'; known: {', '.join(providers())}"
        ) from None


def _sandbox(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    from .sandbox import SandboxChannel

    return SandboxChannel(name, limits)


register("sandbox", _sandbox)
