"""`kaskad run`: the daemon. Wires store, rules, engine, processor, dispatcher, HTTP, MQTT
and the scheduler; SIGTERM drains in-flight work and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from channels.base import Channel, Limits, Outcome
from channels.registry import factory
from engine.api.app import make_app
from engine.api.state import AppState
from engine.clock import Clock, RealClock
from engine.core.changes import Changes
from engine.core.runner import Engine
from engine.core.tracking import Tracker
from engine.core.workspace import IdGen, Workspace
from engine.lang.config import Config
from engine.measure.rfm import RfmJob, through
from engine.runtime.dispatch import Dispatcher
from engine.runtime.intake import Intake
from engine.runtime.logs import configure
from engine.runtime.metrics import Metrics
from engine.runtime.processor import Processor
from engine.runtime.reload import RuleManager
from engine.runtime.tasks import TaskGroup
from engine.store import open_store

log = structlog.get_logger("kaskad.daemon")


def build_channels(config: Config, session: aiohttp.ClientSession) -> dict[str, Channel]:
    """Every configured channel through the provider registry; config errors name the key."""
    import channels.providers  # noqa: F401  (registers the real providers)

    out: dict[str, Channel] = {}
    for name, cfg in config.channels.items():
        keys: dict[str, Any] = dict(cfg.model_extra or {})
        limits = Limits(
            timeout_s=cfg.timeout_s,
            rate_per_s=cfg.rate_per_s,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            retry_for_s=cfg.retry_for_s,
        )
        try:
            out[name] = factory(cfg.provider)(name, keys, limits, session)
        except ValueError as exc:
            # Adapters name the key themselves: "channels.email.from: required".
            raise SystemExit(f"config: {exc}") from None
    return out


class Daemon:
    def __init__(
        self, config: Config, clock: Clock | None = None, *, background: bool = True
    ) -> None:
        self.config = config
        self.clock = clock or RealClock()
        # background=False: no loops run by themselves; tests move a virtual clock and
        # call pump() until idle, so no test ever sleeps for a timer.
        self.background = background
        self.tasks = TaskGroup()
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        config, clock = self.config, self.clock
        self.metrics = Metrics()
        self.store = await open_store(config.storage.url)
        self.rules = RuleManager(Path(config.rules.path), self.store, clock.now)
        ruleset = await self.rules.load()
        secret = config.tracking.secret
        if not secret:
            log.warning(
                "tracking.no_secret",
                hint="set tracking.secret "
                "(KASKAD_TRACKING_SECRET): links are signed with a development key",
            )
        if not config.auth.ingest_tokens and not config.auth.ingest_hmac_secret:
            log.warning(
                "ingest.open",
                hint="set auth.ingest_tokens or auth.ingest_hmac_secret: anyone can post events",
            )
        self.engine = Engine(
            ruleset,
            config,
            lambda message: None,
            ids=IdGen(clock.now),
            tracker=Tracker(config.tracking.base_url, secret or "kaskad-dev-secret"),
        )
        for rule in await self.rules.old_versions():
            self.engine.versions[(rule.id, rule.version)] = rule
        self.rules.listeners.append(self.engine.set_rules)
        self.processor = Processor(
            self.engine, self.store, clock, on_commit=self._committed, metrics=self.metrics
        )
        await self.processor.start()
        for message_id, user_id, answer in await self.store.answered():
            self.processor.deliver(message_id, user_id, Outcome.from_json(answer))
        self.session = aiohttp.ClientSession()
        self.dispatcher = Dispatcher(
            self.store,
            build_channels(config, self.session),
            clock,
            self.processor.deliver,
            self.tasks,
            on_result=lambda ch, kind: self.metrics.sends.labels(ch, kind).inc(),
        )
        self.rfm = RfmJob(self.store, through(self.processor.call))  # nightly; POST /v1/rfm
        self.state = AppState(
            config=config,
            store=self.store,
            clock=clock,
            processor=self.processor,
            rules=self.rules,
            metrics=self.metrics,
            dispatcher=self.dispatcher,
            tracker=self.engine.tracker,
            intake=Intake(self.store, self.processor, clock, config.server, self.metrics),
            rfm=self.rfm,
            started_at=clock.now(),
        )
        self.runner = web.AppRunner(make_app(self.state), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, config.server.host, config.server.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.background:
            self.tasks.spawn(self.processor.run(), name="processor")
            self.tasks.spawn(self.dispatcher.run(), name="dispatcher")
        if config.rules.watch and self.background:
            self.tasks.spawn(self.rules.watch(), name="rules-watch")
        if config.mqtt.url:
            from engine.runtime.mqtt import run_mqtt

            self.state.broker.ok = False
            self.tasks.spawn(
                run_mqtt(config.mqtt, self.state.intake, self.state.broker, self.metrics),
                name="mqtt",
            )
        self.scheduler = self._scheduler()
        log.info(
            "daemon.started",
            host=config.server.host,
            port=config.server.port,
            rules=len(ruleset.rules),
            store=config.storage.url.split("://")[0],
        )

    async def pump(self) -> None:
        """Run the engine loop and the dispatcher until neither has anything due now."""
        while True:
            await self.processor.drain()
            if not await self.dispatcher.dispatch_once() and not self.processor.has_outcomes():
                return

    def _scheduler(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from engine.lang.localtime import parse_time_of_day
        from engine.lang.schedule import cron_trigger

        scheduler = AsyncIOScheduler(timezone="UTC")

        def sync_jobs(ruleset: Any = None) -> None:
            for job in scheduler.get_jobs():
                if job.id.startswith("broadcast:"):
                    job.remove()
            for rule in self.rules.current.scheduled:
                trigger = cron_trigger(rule.trigger.schedule or "", rule.trigger.timezone)
                scheduler.add_job(
                    self.processor.broadcast,
                    trigger,
                    args=[rule.id],
                    id=f"broadcast:{rule.id}",
                    coalesce=True,
                    misfire_grace_time=3600,
                    max_instances=1,
                )

        sync_jobs()
        self.rules.listeners.append(sync_jobs)
        scheduler.add_job(self._retention, "cron", hour=3, minute=17, id="retention")
        rfm = self.config.policies.rfm
        if rfm is not None:
            at = parse_time_of_day(rfm.at)
            scheduler.add_job(
                self.rfm.run,
                "cron",
                hour=at.hour,
                minute=at.minute,
                second=at.second,
                timezone=self.config.policies.timezone,
                id="rfm",
                coalesce=True,
                misfire_grace_time=3600,
                max_instances=1,
            )
        if self.background:
            scheduler.start()
        return scheduler

    async def _retention(self) -> None:
        from engine.lang.durations import parse_duration

        keep_s = parse_duration(self.config.storage.event_retention)
        removed = await self.store.forget_events_before(self.clock.now() - keep_s)
        log.info("retention.done", event_ids_removed=removed)

    async def _committed(self, ws: Workspace, changes: Changes) -> None:
        changes_queued = any(m.status == "queued" for m in changes.messages.values())
        for record in ws.records:
            if record.status == "skipped" and record.reason:
                self.metrics.skips.labels(record.rule, record.reason).inc()
        ws.records.clear()
        if changes_queued:
            self.dispatcher.wake.set()

    async def stop(self) -> None:
        log.info("daemon.stopping")
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.runner.cleanup()  # stop taking requests first
        # Start no send; let calls out answer (bounded) so their answers are recorded and
        # nothing they sent goes out again after the restart; then stop the loops.
        await self.dispatcher.drain(self.config.server.drain_timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.processor.drain(), timeout=10)
        await self.tasks.cancel()
        await self.session.close()
        for state in self.dispatcher.channels.values():
            with contextlib.suppress(Exception):
                await state.channel.close()
        await self.store.close()
        log.info("daemon.stopped")


async def serve(config: Config) -> None:
    daemon = Daemon(config)
    await daemon.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    await daemon.stopping.wait()
    await daemon.stop()


def main(config: Config) -> int:
    configure(config.logging.level, config.logging.format)
    asyncio.run(serve(config))
    return 0
