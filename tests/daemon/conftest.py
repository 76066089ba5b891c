"""An in-process daemon on a virtual clock: real HTTP, a real store, no sleeping.

The store is a SQLite file; a test module that overrides the `storage_url` fixture runs the
same daemon fixtures on another store (tests/daemon/test_postgres.py: PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.clock import VirtualClock, parse_time
from engine.daemon import Daemon
from engine.lang.config import parse_config

from .broker import Broker, mqtt_broker
from .mqtt_run import Run
from .proc import Daemons

ROOT = Path(__file__).resolve().parents[2]
START = parse_time("2026-11-23T10:00:00Z")
INGEST = {"Authorization": "Bearer ingest-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


class Client:
    """A tiny HTTP client bound to the daemon under test."""

    def __init__(self, daemon: Daemon, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session
        self.base = f"http://127.0.0.1:{daemon.port}"

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json() if "json" in ctype else await resp.text()
            return resp.status, body

    async def post_events(
        self, events: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return await self.request(
            "POST", "/v1/events", json=events, headers=INGEST if headers is None else headers
        )

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request(method, path, headers=ADMIN, **kwargs)

    async def advance(self, seconds: float) -> None:
        """Settle what is due now, then jump the clock and settle again."""
        clock = self.daemon.clock
        assert isinstance(clock, VirtualClock)
        await self.daemon.pump()
        clock.advance_to(clock.now() + seconds)
        await self.daemon.pump()


def make_config(
    tmp_path: Path,
    rules: Path,
    policies: str = "{quiet_hours: null, frequency_caps: []}",
    extra: str = "",
    storage_url: str | None = None,
) -> Any:
    return parse_config(f"""
server: {{host: 127.0.0.1, port: 0, max_batch_events: 50}}
storage: {{url: "{storage_url or f"sqlite:///{tmp_path}/kaskad.db"}"}}
rules: {{path: "{rules}", watch: false}}
auth: {{ingest_tokens: [ingest-token], ingest_hmac_secret: hmac-secret,
        admin_token: admin-token}}
policies: {policies}
{extra}
""")


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


# Public URL of the daemon (behind a proxy) and the receipt channels' credentials. Nothing is
# sent to these providers in the tests, so their base URLs lead nowhere.
TRACKING = 'tracking: {base_url: "https://kaskad.example/", secret: track-secret}'
RECEIPT_CHANNELS = """
channels:
  whatsapp: {provider: cloud_api, base_url: "http://127.0.0.1:9", phone_number_id: "1",
             access_token: t, app_secret: s3cret, verify_token: v3rify}
  sms: {provider: twilio, base_url: "http://127.0.0.1:9", account_sid: ACxx,
        auth_token: tw-token, from: "+15550001111"}
"""


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
