"""The shipped deployments are secure as shipped: compose.yaml requires its secrets and keeps
the broker off the host, deploy/config.compose.yaml protects every endpoint with them, and
the image (Dockerfile + config.yaml) listens on every interface only with tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from engine.clock import VirtualClock, parse_time
from engine.daemon import Daemon, exposure_refused
from engine.lang.config import Config, parse_config

ROOT = Path(__file__).resolve().parent.parent
START = parse_time("2026-11-23T10:00:00Z")
ENV = {
    "KASKAD_INGEST_TOKEN": "ingest-6f1d",
    "KASKAD_ADMIN_TOKEN": "admin-93ab",
    "KASKAD_TRACKING_SECRET": "tracking-0c55",
    "KASKAD_PUBLIC_URL": "https://kaskad.shop.example",
}


def compose_config(tmp_path: Path, env: dict[str, str]) -> Config:
    path = ROOT / "deploy" / "config.compose.yaml"
    config = parse_config(path.read_text(encoding="utf-8"), str(path), env=env)
    # What differs outside the container: a free loopback port, a temporary store, the rules
    # of this tree, and no broker (compose's `mosquitto` host is not here).
    config.server.host, config.server.port = "127.0.0.1", 0
    config.storage.url = f"sqlite:///{tmp_path}/kaskad.db"
    config.rules.path, config.rules.watch = str(ROOT / "rules"), False
    config.mqtt.url = None
    return config


def test_the_compose_config_reads_the_compose_variables(tmp_path: Path) -> None:
    path = ROOT / "deploy" / "config.compose.yaml"
    config = parse_config(path.read_text(encoding="utf-8"), str(path), env=ENV)
    assert config.server.host == "0.0.0.0"  # inside the container
    assert config.auth.ingest_tokens == ["ingest-6f1d"]
    assert config.auth.admin_token == "admin-93ab"
    assert config.tracking.secret == "tracking-0c55"
    assert config.tracking.base_url == "https://kaskad.shop.example"
    assert config.mqtt.url == "mqtt://mosquitto:1883"
    assert exposure_refused(config) is None
    # Were compose to start it without them, the daemon would refuse.
    bare = parse_config(path.read_text(encoding="utf-8"), str(path), env={})
    assert exposure_refused(bare) is not None


async def test_the_compose_config_serves_nothing_without_the_tokens(tmp_path: Path) -> None:
    daemon = Daemon(compose_config(tmp_path, ENV), VirtualClock(START), background=False)
    await daemon.start()
    base = f"http://127.0.0.1:{daemon.port}"
    event = {"type": "profile.updated", "user_id": "u1", "data": {"email": "ann@example.com"}}
    ingest = {"Authorization": f"Bearer {ENV['KASKAD_INGEST_TOKEN']}"}
    admin = {"Authorization": f"Bearer {ENV['KASKAD_ADMIN_TOKEN']}"}
    try:
        async with aiohttp.ClientSession() as session:

            async def call(method: str, path: str, **kwargs: Any) -> int:
                async with session.request(method, base + path, **kwargs) as resp:
                    return resp.status

            reads = ["/v1/profiles/u1", "/metrics", "/v1/stats", "/v1/messages", "/"]
            assert await call("POST", "/v1/events", json=event) == 401
            for path in reads:
                assert await call("GET", path) == 401, path
            wrong = {"Authorization": "Bearer change-me"}
            assert await call("GET", "/v1/profiles/u1", headers=wrong) == 401
            assert await call("POST", "/v1/events", json=event, headers=admin) == 401

            assert await call("POST", "/v1/events", json=event, headers=ingest) == 202
            await daemon.pump()
            for path in reads:
                assert await call("GET", path, headers=admin) == 200, path
        assert daemon.engine.tracker.click_url("m1", "https://a.example/").startswith(
            "https://kaskad.shop.example/t/c/"
        )
    finally:
        await daemon.stop()


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def test_compose_ships_no_secret() -> None:
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert "change-me" not in text
    secrets = 0
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.fullmatch(r"KASKAD_\w*(TOKEN|SECRET)", key):
                secrets += 1
                # `${VAR:?why}`: compose refuses to start without it, and there is no default.
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", str(value)), (name, key, value)
    assert secrets == 3  # ingest, admin, tracking


def test_compose_keeps_the_anonymous_broker_off_the_host() -> None:
    mosquitto = compose()["services"]["mosquitto"]
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text(encoding="utf-8")
    anonymous = re.search(r"^\s*allow_anonymous\s+true\s*$", conf, re.MULTILINE) is not None
    assert not (anonymous and mosquitto.get("ports")), "an open broker published on the host"
    assert "ports" in compose()["services"]["kaskad"]


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets (KEY=value pairs of its ENV instructions)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
    return {k: v.strip('"') for k, v in env.items()}


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({}, True),
        ({"KASKAD_INGEST_TOKEN": "i", "KASKAD_ADMIN_TOKEN": "a"}, False),
        ({"KASKAD_ALLOW_OPEN": "true"}, False),
    ],
)
def test_the_image_listens_on_every_interface_only_with_tokens(
    extra: dict[str, str], refused: bool
) -> None:
    env = image_env()
    assert env["KASKAD_HOST"] == "0.0.0.0"
    config = parse_config((ROOT / "config.yaml").read_text(encoding="utf-8"), env=env | extra)
    assert config.server.host == "0.0.0.0"
    assert bool(exposure_refused(config)) is refused


def test_make_run_listens_on_loopback_without_tokens() -> None:
    config = parse_config((ROOT / "config.yaml").read_text(encoding="utf-8"), env={})
    assert config.server.host == "127.0.0.1" and not config.auth.admin_token
    assert exposure_refused(config) is None
