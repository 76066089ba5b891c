"""Typed application state shared by the routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from engine.api.ratelimit import Failures
from engine.api.sessions import Sessions
from engine.clock import Clock
from engine.core.tracking import Tracker
from engine.lang.config import Config
from engine.measure.rfm import RfmJob
from engine.runtime.intake import Intake
from engine.runtime.metrics import Metrics
from engine.runtime.mqtt import BrokerStatus
from engine.store.base import Store

if TYPE_CHECKING:
    from engine.runtime.dispatch import Dispatcher
    from engine.runtime.processor import Processor
    from engine.runtime.reload import RuleManager


@dataclass
class AppState:
    config: Config
    store: Store
    clock: Clock
    processor: Processor
    rules: RuleManager
    metrics: Metrics
    intake: Intake
    dispatcher: Dispatcher | None = None
    tracker: Tracker | None = None  # None: tracking links are not served
    broker: BrokerStatus = field(default_factory=BrokerStatus)
    rfm: RfmJob | None = None
    started_at: float = 0.0
    # Failed logins and wrong tokens, per client address (api/ratelimit.py).
    auth_failures: Failures = field(default_factory=Failures)
    sessions: Sessions = field(init=False)  # the dashboard's sessions (api/sessions.py)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.store, self.clock)


STATE: web.AppKey[AppState] = web.AppKey("kaskad", AppState)
