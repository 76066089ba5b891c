"""The channel kinds kaskad knows, one file each, registered here in one explicit table
(channels/registry.py refuses a name twice): what a rule's cascade, a template's blocks and
config.yaml's `channels` may name."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from ..registry import find_kind, kind, kind_names, kinds, register_kind
from .base import ChannelKind, Field, LimitError, MarketingLinks
from .email import Email
from .mobile_push import MobilePush
from .sms import Sms
from .telegram import Telegram
from .webhook import Webhook
from .webpush import WebPush
from .whatsapp import WhatsApp

__all__ = [
    "CHANNELS",
    "ChannelKind",
    "Field",
    "LimitError",
    "MarketingLinks",
    "find_kind",
    "kind",
    "kind_names",
    "kinds",
]

for _kind in (MobilePush(), WebPush(), Email(), Sms(), Telegram(), WhatsApp(), Webhook()):
    register_kind(_kind)


class _Names(Sequence[str]):
    """The registered kinds' names, read at each use: a kind registered later is in."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return kind_names()[index]

    def __len__(self) -> int:
        return len(kind_names())

    def __iter__(self) -> Iterator[str]:
        return iter(kind_names())

    def __contains__(self, name: object) -> bool:
        return find_kind(name) is not None if isinstance(name, str) else False

    def __repr__(self) -> str:
        return repr(kind_names())


CHANNELS: Sequence[str] = _Names()
