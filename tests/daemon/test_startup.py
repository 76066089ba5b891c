"""Safe by default at start-up: an API without tokens on a public interface is refused, every
open surface is warned about, and /metrics takes a token."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from engine.clock import VirtualClock
from engine.daemon import Daemon, exposure_refused
from engine.lang.config import Config, parse_config
from engine.runtime.logs import configure

from .helpers import START, Client

ROOT = Path(__file__).resolve().parents[2]
OPEN_WARNINGS = ["ingest.open", "admin.open", "dashboard.open", "metrics.open"]


def config_text(tmp_path: Path, host: str, auth: str = "{}", extra: str = "") -> str:
    return f"""
server: {{host: "{host}", port: 0}}
storage: {{url: "sqlite:///{tmp_path}/kaskad.db"}}
rules: {{path: "{ROOT / "rules"}", watch: false}}
auth: {auth}
{extra}
"""


def config(tmp_path: Path, host: str, auth: str = "{}", extra: str = "") -> Config:
    return parse_config(config_text(tmp_path, host, auth, extra))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure(level="warning", fmt="console")  # as tests/conftest.py leaves it


async def test_a_public_host_without_tokens_is_refused_before_anything_opens(
    tmp_path: Path,
) -> None:
    daemon = Daemon(config(tmp_path, "0.0.0.0"), VirtualClock(START), background=False)
    try:
        with pytest.raises(SystemExit) as exited:
            await daemon.start()
    finally:
        if hasattr(daemon, "runner"):  # it started: stop it, the assertion has failed
            await daemon.stop()
    assert exited.value.code == (
        "config: server.host '0.0.0.0' is not loopback: set auth.admin_token (or auth.users) and "
        "auth.ingest_tokens (or auth.ingest_hmac_secret), or auth.allow_open: true to serve "
        "the API without them"
    )
    assert not (tmp_path / "kaskad.db").exists()  # refused before the store was opened


def test_kaskad_run_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tmp_path, "0.0.0.0", "{admin_token: a}"))
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "config: server.host '0.0.0.0' is not loopback: set auth.ingest_tokens "
        "(or auth.ingest_hmac_secret), or auth.allow_open: true to serve the API without them"
    ]


@pytest.mark.parametrize(
    ("host", "auth", "refused"),
    [
        ("127.0.0.1", "{}", False),
        ("127.3.4.5", "{}", False),
        ("::1", "{}", False),
        ("localhost", "{}", False),
        ("0.0.0.0", "{}", True),
        ("::", "{}", True),
        ("", "{}", True),
        ("10.1.2.3", "{admin_token: a}", True),
        ("shop.internal", "{ingest_tokens: [i]}", True),
        ("0.0.0.0", "{ingest_tokens: [i], admin_token: a}", False),
        ("0.0.0.0", "{ingest_hmac_secret: h, admin_token: a}", False),
        ("0.0.0.0", '{ingest_tokens: [""], admin_token: ""}', True),  # ${VAR:-} unset
        ("0.0.0.0", "{allow_open: true}", False),
    ],
)
def test_which_configs_are_refused(tmp_path: Path, host: str, auth: str, refused: bool) -> None:
    assert bool(exposure_refused(config(tmp_path, host, auth))) is refused


async def test_allow_open_starts_and_warns_about_every_open_surface(tmp_path: Path) -> None:
    cfg = config(tmp_path, "0.0.0.0", "{allow_open: true}", "mqtt: {url: 'mqtt://127.0.0.1:9'}")
    daemon = Daemon(cfg, VirtualClock(START), background=False)
    with capture_logs() as logs:
        await daemon.start()
    try:
        warned = [e["event"] for e in logs if e["log_level"] == "warning"]
        assert warned[:6] == ["auth.allow_open", *OPEN_WARNINGS, "mqtt.no_credentials"]
        assert all("hint" in e for e in logs if e["event"] in OPEN_WARNINGS)
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            assert (await client.request("GET", "/metrics"))[0] == 200  # open, as warned
            assert (await client.request("GET", "/v1/messages"))[0] == 200
    finally:
        await daemon.stop()


async def test_a_protected_daemon_warns_about_nothing(
    tmp_path: Path, restore_logging: None
) -> None:
    configure(level="info")
    auth = "{ingest_tokens: [i], admin_token: a}"
    mqtt = "mqtt: {url: 'mqtt://kaskad:pw@127.0.0.1:9'}"
    daemon = Daemon(config(tmp_path, "0.0.0.0", auth, mqtt), VirtualClock(START), background=False)
    with capture_logs() as logs:
        await daemon.start()
    await daemon.stop()
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert not [w for w in warnings if w != "mqtt.disconnected"]  # port 9: nobody there
    # Where the tracking key came from is logged, never the key.
    (secret,) = [e for e in logs if e["event"] == "tracking.secret"]
    assert secret == {"event": "tracking.secret", "source": "store", "log_level": "info"}


async def test_metrics_take_the_metrics_token_or_an_accounts_token(tmp_path: Path) -> None:
    viewer = hashlib.sha256(b"vera").hexdigest()
    auth = (
        "{ingest_tokens: [i], admin_token: admin, metrics_token: scrape, "
        f"users: [{{name: vera, token_sha256: {viewer}, role: viewer}}]}}"
    )
    daemon = Daemon(config(tmp_path, "127.0.0.1", auth), VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)

            async def scrape(token: str | None) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return await client.request("GET", "/metrics", headers=headers)

            status, body = await scrape(None)
            assert status == 401 and "auth.metrics_token" in body["error"]["message"]
            assert (await scrape("wrong"))[0] == 401
            assert (await scrape("sçrape"))[0] == 401  # not ASCII: refused, not a 500
            assert (await scrape("scrape"))[0] == 200
            assert (await scrape("admin"))[0] == 200
            assert (await scrape("vera"))[0] == 200  # a named account, even a viewer
            # The metrics token opens nothing else.
            headers = {"Authorization": "Bearer scrape"}
            assert (await client.request("GET", "/v1/messages", headers=headers))[0] == 401
    finally:
        await daemon.stop()


async def test_named_accounts_alone_close_the_metrics(tmp_path: Path) -> None:
    viewer = hashlib.sha256(b"vera").hexdigest()
    auth = f"{{ingest_tokens: [i], users: [{{name: vera, token_sha256: {viewer}, role: viewer}}]}}"
    daemon = Daemon(config(tmp_path, "127.0.0.1", auth), VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            assert (await client.request("GET", "/metrics"))[0] == 401
            vera = {"Authorization": "Bearer vera"}
            assert (await client.request("GET", "/metrics", headers=vera))[0] == 200
    finally:
        await daemon.stop()


def test_a_second_daemon_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    """One daemon per SQLite file: the second exits 2 with one line naming the lock; once
    the first stops, the file is free again."""
    path = tmp_path / "config.yaml"
    auth = "{admin_token: a, ingest_tokens: [t]}"
    path.write_text(config_text(tmp_path, "127.0.0.1", auth))

    def second() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    async def with_first_running() -> subprocess.CompletedProcess[str]:
        daemon = Daemon(config(tmp_path, "127.0.0.1", auth), VirtualClock(START), background=False)
        await daemon.start()
        try:
            return await asyncio.to_thread(second)
        finally:
            await daemon.stop()

    done = asyncio.run(with_first_running())
    assert done.returncode == 2  # as every start error
    db = tmp_path / "kaskad.db"
    assert done.stderr.strip().splitlines() == [
        f"storage.url sqlite:///{db}: another kaskad daemon is running on this database "
        f"(it holds {db}.lock)"
    ]

    async def start_again() -> None:
        daemon = Daemon(config(tmp_path, "127.0.0.1", auth), VirtualClock(START), background=False)
        await daemon.start()  # the first released the file when it stopped
        await daemon.stop()

    asyncio.run(start_again())
