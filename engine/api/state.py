"""Typed application state shared by the routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ..clock import Clock
from ..config import Config
from ..metrics import Metrics
from ..store.base import Store
from ..tracking import Tracker

if TYPE_CHECKING:
    from ..dispatch import Dispatcher
    from ..processor import Processor
    from ..reload import RuleManager


@dataclass
class AppState:
    config: Config
    store: Store
    clock: Clock
    processor: Processor
    rules: RuleManager
    metrics: Metrics
    dispatcher: Dispatcher | None = None
    tracker: Tracker | None = None  # None: tracking links are not served
    broker_ok: bool | None = None  # None: no broker configured
    broker_error: str | None = None
    started_at: float = 0.0
    max_inbox: int = 200_000
    extra: dict[str, object] = field(default_factory=dict)


STATE: web.AppKey[AppState] = web.AppKey("kaskad", AppState)
