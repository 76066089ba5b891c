"""The explicit tables of channel kinds and of channel providers; registering a name twice
is an error. The built-in kinds are registered by channels/kinds, the real providers by
channels/providers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Channel, Limits

if TYPE_CHECKING:
    from .kinds.base import ChannelKind

# A factory builds a channel from its name ("email"), its validated config keys and the
# shared aiohttp session (None for providers that need none). Raises ValueError naming
# the bad key.
Factory = Callable[[str, dict[str, Any], Limits, Any], Channel]

_PROVIDERS: dict[str, Factory] = {}


def register(provider: str, factory: Factory) -> None:
    if provider in _PROVIDERS:
        raise ValueError(f"channel provider '{provider}' is registered twice")
    _PROVIDERS[provider] = factory


def unregister(provider: str) -> None:
    """Forget a provider (a test's own, registered for the test)."""
    _PROVIDERS.pop(provider, None)


def providers() -> list[str]:
    return sorted(_PROVIDERS)


def factory(provider: str) -> Factory:
    try:
        return _PROVIDERS[provider]
    except KeyError:
        raise ValueError(
            f"unknown channel provider '{provider}'; known: {', '.join(providers())}"
        ) from None


_KINDS: dict[str, ChannelKind] = {}
# A template file's own keys stand beside its channel blocks: no kind may take them.
_RESERVED = frozenset({"template", "description"})


def register_kind(kind: ChannelKind) -> None:
    """Add a kind; ValueError when its name is taken or its declaration contradicts itself."""
    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED:
        raise ValueError(
            f"channel kind name {name!r} must be a word other than template, description"
        )
    if name in _KINDS:
        raise ValueError(f"channel kind '{name}' is registered twice")
    if not kind.fields:
        raise ValueError(f"channel kind '{name}' declares no template fields")
    for what, keys in (("needs_any", kind.needs_any), ("text_chars", kind.text_chars)):
        unknown = [k for k in keys if k not in kind.fields]
        if unknown:
            raise ValueError(f"channel kind '{name}': {what} names no field: {', '.join(unknown)}")
    _KINDS[name] = kind


def unregister_kind(name: str) -> None:
    """Forget a kind (a test's own, registered for the test)."""
    _KINDS.pop(name, None)


def kinds() -> tuple[ChannelKind, ...]:
    """Every registered kind, in the order of registration."""
    return tuple(_KINDS.values())


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def find_kind(name: str) -> ChannelKind | None:
    return _KINDS.get(name)


def kind(name: str) -> ChannelKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown channel '{name}'; known: {', '.join(_KINDS)}") from None


def _sandbox(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    from .sandbox import SandboxChannel

    return SandboxChannel(name, limits)


register("sandbox", _sandbox)
