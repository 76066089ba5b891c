"""An in-process daemon on a virtual clock: real HTTP, a real store, no sleeping.

The store is a SQLite file; a test module that overrides the `storage_url` fixture runs the
same daemon fixtures on another store (tests/daemon/test_postgres.py: PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon

from .broker import Broker, mqtt_broker
from .helpers import RECEIPT_CHANNELS, ROOT, START, TRACKING, Client, make_config
from .mqtt_run import Run
from .proc import Daemons


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/kaskad.db"


@pytest.fixture
async def client(tmp_path: Path, rules_dir: Path, storage_url: str) -> AsyncIterator[Client]:
    config = make_config(tmp_path, rules_dir, storage_url=storage_url)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


@pytest.fixture
async def tracked(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Client]:
    """A daemon with a public tracking URL and secret; every channel a sandbox."""
    config = make_config(tmp_path, rules_dir, extra=TRACKING)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


@pytest.fixture
async def receipts(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Client]:
    """As `tracked`, with WhatsApp (Cloud API) and SMS (Twilio) set up for callbacks."""
    config = make_config(tmp_path, rules_dir, extra=TRACKING + RECEIPT_CHANNELS)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """An MQTT broker on the loopback interface (tests/daemon/broker.py says which)."""
    async with mqtt_broker(tmp_path) as found:
        yield found


@pytest.fixture
async def run(broker: Broker, tmp_path: Path, rules_dir: Path) -> AsyncIterator[Run]:
    """Daemon processes on the broker (tests/daemon/mqtt_run.py), killed at the end."""
    async with Daemons() as daemons:
        r = Run(broker, tmp_path, rules_dir, daemons)
        try:
            yield r
        finally:
            for daemon in daemons.started:
                await daemon.close()
            await r.forget_sessions()
