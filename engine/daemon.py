"""`kaskad run`: the daemon. Wires store, rules, engine, processor, dispatcher, HTTP, MQTT
and the scheduler; SIGTERM drains in-flight work and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import signal
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import structlog
from aiohttp import web
from pydantic import ValidationError

from channels.base import Channel, Limits, Outcome
from channels.kinds import CHANNELS
from channels.registry import factory, providers
from engine.api.app import make_app
from engine.api.state import AppState
from engine.clock import Clock, RealClock
from engine.core.changes import Changes
from engine.core.runner import Engine
from engine.core.tracking import Tracker
from engine.core.workspace import IdGen, Workspace
from engine.errors import KaskadError, did_you_mean
from engine.lang.config import AuthConfig, ChannelConfig, Config
from engine.lang.durations import parse_duration
from engine.lang.localtime import parse_time_of_day
from engine.lang.ruleset import RuleSet
from engine.measure.rfm import RfmJob, through
from engine.runtime.dispatch import Dispatcher
from engine.runtime.intake import Intake
from engine.runtime.jobs import Job, cron_job
from engine.runtime.logs import configure
from engine.runtime.metrics import Metrics
from engine.runtime.processor import Processor
from engine.runtime.reload import RuleManager
from engine.runtime.tasks import TaskGroup
from engine.store import open_store
from engine.store.base import JobRow
from engine.store.urls import PgSettings, redact

log = structlog.get_logger("kaskad.daemon")

RETENTION_BATCH = 1000  # messages deleted per transaction by the retention job


class StartError(KaskadError):
    """The daemon cannot start (a channel's config, the store, the port); one line each."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


# An adapter's error names its key first: "channels.email.password: required when ...".
_KEYED = re.compile(r"(channels\.[A-Za-z0-9_.]+): (.*)", re.DOTALL)


def _build_channel(name: str, cfg: ChannelConfig, session: aiohttp.ClientSession) -> Channel:
    """One channel through the provider registry; ValueError names the bad key."""
    import channels.providers  # noqa: F401  (registers the real providers)

    if cfg.provider not in providers():
        raise ValueError(
            f"channels.{name}.provider: unknown provider '{cfg.provider}'"
            f"{did_you_mean(cfg.provider, providers())}; known: {', '.join(providers())}"
        )
    limits = Limits(
        timeout_s=cfg.timeout_s,
        rate_per_s=cfg.rate_per_s,
        concurrency=cfg.concurrency,
        max_retries=cfg.max_retries,
        retry_for_s=cfg.retry_for_s,
    )
    return factory(cfg.provider)(name, dict(cfg.model_extra or {}), limits, session)


def _keyed(name: str, exc: ValueError) -> tuple[str, str]:
    """(dotted key, message) of a channel's config error."""
    found = _KEYED.fullmatch(str(exc))
    return (found[1], found[2]) if found else (f"channels.{name}", str(exc))


def build_channels(config: Config, session: aiohttp.ClientSession) -> dict[str, Channel]:
    """Every configured channel through the provider registry; StartError names every bad
    key of every channel at once."""
    out: dict[str, Channel] = {}
    errors: list[str] = []
    for name, cfg in config.channels.items():
        try:
            out[name] = _build_channel(name, cfg, session)
        except ValueError as exc:
            key, message = _keyed(name, exc)
            errors.append(f"config: {key}: {message}")
    if errors:
        raise StartError(errors)
    return out


def check_channels(doc: Any) -> list[tuple[str, str]]:
    """The `channels` section of a raw config (a parse_config check): each channel built by
    its provider's factory, as the daemon would, so every adapter checks its own keys.
    Nothing is sent and nothing connects; runs its own event loop (for the HTTP session the
    factories want), so call it where no loop runs: the command line."""
    section = doc.get("channels") if isinstance(doc, Mapping) else None
    if not isinstance(section, Mapping):
        return []  # absent, or not a mapping: the config model reports it

    async def check() -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        async with aiohttp.ClientSession() as session:
            for name, raw in section.items():
                if name not in CHANNELS:
                    continue  # the config model names it
                try:
                    cfg = ChannelConfig.model_validate(raw if raw is not None else {})
                except ValidationError:
                    continue  # so do the common keys' errors
                try:
                    channel = _build_channel(name, cfg, session)
                except ValueError as exc:
                    found.append(_keyed(name, exc))
                else:
                    await channel.close()
        return found

    return asyncio.run(check())


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        return False  # a host name (or "" = every interface) may be reachable from anywhere


def _ingest_open(auth: AuthConfig) -> bool:
    return not auth.ingest_tokens and not auth.ingest_hmac_secret


def exposure_refused(config: Config) -> str | None:
    """Why the daemon must not start: the API open on a non-loopback interface."""
    auth, host = config.auth, config.server.host
    if _loopback(host) or auth.allow_open:
        return None
    missing = ["auth.admin_token (or auth.users)"] if not auth.has_accounts else []
    if _ingest_open(auth):
        missing.append("auth.ingest_tokens (or auth.ingest_hmac_secret)")
    if not missing:
        return None
    return (
        f"config: server.host {host!r} is not loopback: set {' and '.join(missing)}, "
        "or auth.allow_open: true to serve the API without them"
    )


def warn_open_surfaces(config: Config) -> None:
    """One warning per endpoint anyone who reaches the port can use, at every start."""
    auth = config.auth
    if auth.allow_open and not _loopback(config.server.host):
        log.warning("auth.allow_open", host=config.server.host, hint="open endpoints are served")
    if _ingest_open(auth):
        log.warning(
            "ingest.open",
            hint="set auth.ingest_tokens or auth.ingest_hmac_secret: anyone can post events",
        )
    if not auth.has_accounts:
        log.warning(
            "admin.open",
            hint="set auth.admin_token: anyone can read and erase profiles, messages, stats",
        )
        log.warning("dashboard.open", hint="set auth.admin_token: anyone can open the dashboard")
    if not auth.metrics_token and not auth.has_accounts:
        log.warning(
            "metrics.open", hint="set auth.metrics_token or auth.admin_token: /metrics is open"
        )
    if config.mqtt.url and urlparse(config.mqtt.url).username is None:
        log.warning(
            "mqtt.no_credentials",
            hint="mqtt.url has no user:password: anyone the broker accepts can publish events",
        )


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
        refused = exposure_refused(config)
        if refused:
            raise SystemExit(refused)
        warn_open_surfaces(config)
        self.metrics = Metrics()
        # Channels first: a bad channel config fails the start before anything is opened.
        self.session = aiohttp.ClientSession()
        channels = build_channels(config, self.session)
        try:
            self.store = await open_store(
                config.storage.url, exclusive=True, pg=PgSettings.of(config.storage)
            )
        except (OSError, ValueError, sqlite3.Error) as exc:
            # postgres names the (masked) url itself; say it for the others
            text = str(exc)
            prefix = (
                ""
                if text.startswith("storage.url")
                else f"storage.url {redact(config.storage.url)}: "
            )
            raise StartError([prefix + text]) from None
        self.rules = RuleManager(Path(config.rules.path), self.store, clock.now)
        ruleset = await self.rules.load()
        self.engine = Engine(
            ruleset,
            config,
            lambda message: None,
            ids=IdGen(clock.now),
            tracker=Tracker(config.tracking.base_url, await self._tracking_secret()),
        )
        for rule in await self.rules.old_versions():
            self.engine.versions[(rule.id, rule.version)] = rule
        self.processor = Processor(
            self.engine,
            self.store,
            clock,
            on_commit=self._committed,
            metrics=self.metrics,
            offload=self.background,
        )
        self.rfm = RfmJob(self.store, through(self.processor.call))  # nightly; POST /v1/rfm
        self.rules.listeners.append(self.processor.set_rules)
        self.rules.controls = lambda: self.processor.controls
        self.rules.listeners.append(lambda rules: self.processor.set_jobs(self._jobs(rules)))
        self.processor.set_jobs(self._jobs(ruleset))
        await self.processor.start()
        for message_id, user_id, answer in await self.store.answered():
            self.processor.deliver(message_id, user_id, Outcome.from_json(answer))
        self.dispatcher = Dispatcher(
            self.store,
            channels,
            clock,
            self.processor.deliver,
            self.tasks,
            on_result=lambda ch, kind: self.metrics.sends.labels(ch, kind).inc(),
        )
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
        # Headers that do not arrive within server.read_timeout_s close the connection (as
        # aiohttp's keep-alive timeout does to a connection with no whole request in it);
        # a body that does not gets 408 (engine/api/body.py).
        self.runner = web.AppRunner(
            make_app(self.state),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=config.server.read_timeout_s,
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            where = f"{config.server.host}:{config.server.port}"
            raise StartError([f"server {where}: cannot listen: {exc.strerror or exc}"]) from None
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
        log.info(
            "daemon.started",
            host=config.server.host,
            port=config.server.port,
            rules=len(ruleset.rules),
            store=config.storage.url.split("://")[0],
        )

    async def _tracking_secret(self) -> str:
        """tracking.secret, else the one generated on first start and kept in the store
        (shared by replicas on one database), so links stay valid across restarts."""
        if self.config.tracking.secret:
            log.info("tracking.secret", source="config")
            return self.config.tracking.secret
        log.info("tracking.secret", source="store")
        return await self.store.secret("tracking")

    async def pump(self) -> None:
        """Run the engine loop and the dispatcher until neither has anything due now."""
        while True:
            await self.processor.drain()
            if not await self.dispatcher.dispatch_once() and not self.processor.has_outcomes():
                return

    def _jobs(self, rules: RuleSet) -> list[Job]:
        """Broadcasts, retention and the nightly RFM, fired by the engine loop (once across
        replicas)."""
        jobs = self.processor.broadcast_jobs(rules)
        # Its own task in the daemon: a first run over a large store must not hold the loop.
        jobs.append(cron_job("retention", "17 3 * * *", "UTC", self._retention, background=True))
        rfm = self.config.policies.rfm
        if rfm is not None:
            at = parse_time_of_day(rfm.at)
            jobs.append(
                cron_job(
                    "rfm",
                    f"{at.minute} {at.hour} * * *",
                    self.config.policies.timezone,
                    self._rfm,
                    background=True,  # it writes through the engine loop
                )
            )
        return jobs

    async def _rfm(self, run: JobRow) -> None:
        await self.rfm.run()

    async def _retention(self, run: JobRow) -> None:
        """Event ids past storage.event_retention, messages past storage.message_retention
        (in batches, each its own short transaction)."""
        storage, now = self.config.storage, self.clock.now()
        keep_s = parse_duration(storage.event_retention)
        removed = await self.store.forget_events_before(now - keep_s)
        logged = await self.store.forget_user_events_before(now - keep_s)
        before = now - parse_duration(storage.message_retention)
        messages = 0
        while True:
            batch = await self.store.delete_messages_before(before, RETENTION_BATCH)
            messages += batch
            if batch < RETENTION_BATCH:
                break
            await asyncio.sleep(0)  # let the engine loop and the API in between batches
        log.info(
            "retention.done",
            event_ids_removed=removed,
            user_events_removed=logged,
            messages_removed=messages,
        )

    async def _committed(self, ws: Workspace, changes: Changes) -> None:
        changes_queued = any(m.status == "queued" for m in changes.messages.values())
        for record in ws.records:
            if record.status == "skipped" and record.reason:
                self.metrics.skips.labels(record.rule, record.reason).inc()
        if changes_queued:
            self.dispatcher.wake.set()

    async def stop(self) -> None:
        log.info("daemon.stopping")
        await self.runner.cleanup()  # stop taking requests first
        # Start no send; let calls out answer (bounded) so their answers are recorded and
        # nothing they sent goes out again after the restart; then stop the loops (answers
        # not applied yet are applied at the next start).
        await self.dispatcher.drain(self.config.server.drain_timeout_s)
        await self.processor.stop()
        await self.tasks.cancel()
        await self.session.close()
        for state in self.dispatcher.channels.values():
            with contextlib.suppress(Exception):
                await state.channel.close()
        await self.store.close()
        log.info("daemon.stopped")

    async def abort(self) -> None:
        """Close what a failed start() opened, so the process can exit (the store's thread
        and the HTTP session would otherwise keep it alive)."""
        if getattr(self, "runner", None) is not None:
            await self.runner.cleanup()
        if getattr(self, "processor", None) is not None:
            await self.processor.stop()
        await self.tasks.cancel()
        if getattr(self, "session", None) is not None:
            await self.session.close()
        if getattr(self, "store", None) is not None:
            with contextlib.suppress(Exception):
                await self.store.close()


async def serve(config: Config) -> None:
    daemon = Daemon(config)
    try:
        await daemon.start()
    except BaseException:
        await daemon.abort()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    await daemon.stopping.wait()
    await daemon.stop()


def main(config: Config) -> int:
    """Run until SIGTERM (exit 0); a start that fails prints why and exits 2 at once."""
    configure(config.logging.level, config.logging.format)
    try:
        asyncio.run(serve(config))
    except StartError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    return 0
