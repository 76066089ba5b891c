"""What the MQTT tests share: one test's names on the broker and its daemon processes
(`Run`, the `run` fixture in conftest.py), events, and HTTP probes of a daemon."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from .broker import Broker
from .proc import (
    DaemonProcess,
    Daemons,
    free_port,
    http_json,
    metric,
    poll,
    write_config,
)

HOST = "127.0.0.1"
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


@dataclass
class Run:
    """One test's names on the broker, and its daemons."""

    broker: Broker
    tmp_path: Path
    rules: Path
    daemons: Daemons
    base: str = field(default_factory=lambda: f"kaskad-test-{secrets.token_hex(4)}")
    client_ids: set[str] = field(default_factory=set)

    @property
    def topic(self) -> str:
        return f"{self.base}/events/shop1"

    @property
    def dead_topic(self) -> str:
        return f"{self.base}/dead"

    async def start(
        self,
        name: str,
        client_id: str,
        shared_group: str | None = None,
        dead_letter_topic: str | None = None,
    ) -> DaemonProcess:
        """A daemon on its own SQLite file; waits until it has subscribed."""
        self.client_ids.add(client_id)
        port = free_port()
        config = write_config(
            self.tmp_path / f"{name}-{port}.yaml",
            {
                "server": {"host": HOST, "port": port},
                "storage": {"url": f"sqlite:///{self.tmp_path}/{name}.db"},
                "rules": {"path": str(self.rules), "watch": False},
                "mqtt": {
                    "url": self.broker.url,
                    "topics": [f"{self.base}/events/#"],
                    "client_id": client_id,
                    "shared_group": shared_group,
                    "dead_letter_topic": dead_letter_topic or self.dead_topic,
                },
                "logging": {"format": "json", "level": "info"},
            },
        )
        daemon = await self.daemons.start(config, port, name)
        await daemon.wait_for("mqtt.connected", within=30)
        return daemon

    def client(self, role: str = "pub") -> aiomqtt.Client:
        return self.broker.client(f"{self.base}-{role}")

    async def forget_sessions(self) -> None:
        """Drop the daemons' persistent sessions from the (shared) broker."""
        for client_id in sorted(self.client_ids):
            with contextlib.suppress(aiomqtt.MqttError):
                async with self.broker.client(client_id, clean_session=True):
                    pass


def profile(user: str) -> dict[str, Any]:
    return {
        "id": f"p-{user}",
        "type": "profile.updated",
        "user_id": user,
        "data": {"email": f"{user}@shop.test"},
    }


def cart(user: str) -> dict[str, Any]:
    return {"id": f"c-{user}", "type": "cart.updated", "user_id": user, "data": CART}


async def get(session: aiohttp.ClientSession, daemon: DaemonProcess, path: str) -> Any:
    status, body = await http_json(session, "GET", daemon.url + path)
    assert status == 200, (path, status, body)
    return body


async def stored_profile(
    session: aiohttp.ClientSession, daemon: DaemonProcess, user: str
) -> dict[str, Any] | None:
    status, body = await http_json(session, "GET", f"{daemon.url}/v1/profiles/{user}")
    return body if status == 200 else None


async def wait_profile(
    session: aiohttp.ClientSession, daemon: DaemonProcess, user: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await stored_profile(session, daemon, user)

    return await poll(probe, within=20, what=f"the profile of {user} in {daemon.name}")


async def metrics(session: aiohttp.ClientSession, daemon: DaemonProcess) -> str:
    text = await get(session, daemon, "/metrics")
    assert isinstance(text, str)
    return text


async def accepted(session: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    return metric(await metrics(session, daemon), "kaskad_events_accepted_total") or 0.0


async def collect(client: aiomqtt.Client, count: int, within: float) -> list[aiomqtt.Message]:
    """The next `count` messages of a client's subscriptions, or fail at the deadline."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            got.append(message)
            if len(got) == count:
                break
    return got
