"""The MQTT broker of the tests: the local Mosquitto on 127.0.0.1:1883 when it answers, else
one started from the `mosquitto` binary, else amqtt in this process, so a machine with no
broker installed still runs every MQTT test instead of skipping it.

KASKAD_TEST_BROKER picks one: `local`, `mosquitto` (a broker of the test's own) or `amqtt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from .proc import free_port, port_open, wait_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Broker:
    port: int
    kind: str  # local | mosquitto | amqtt
    # What amqtt (0.12) lacks: $share/GROUP/TOPIC subscriptions, and at-least-once delivery
    # (it drops a QoS 1 message its subscriber has not acknowledged within 5 s or before a
    # disconnect, where Mosquitto sends it again when the session reconnects).
    shared: bool
    redelivers: bool
    # amqtt keeps the session (subscriptions, unacknowledged messages) only of a client that
    # gave a user name: an anonymous one is dropped at its disconnect.
    username: str | None = None

    @property
    def url(self) -> str:
        """The daemon's `mqtt.url`."""
        user = f"{self.username}:unchecked@" if self.username else ""
        return f"mqtt://{user}{HOST}:{self.port}"

    def client(self, identifier: str, **kwargs: Any) -> aiomqtt.Client:
        return aiomqtt.Client(
            HOST, self.port, identifier=identifier, username=self.username, **kwargs
        )


def require(broker: Broker, feature: str) -> None:
    """Skip a test this broker cannot run (`shared` or `redelivers`); under CI=true, fail:
    CI has Mosquitto (.ci/run starts it), so every MQTT test must run there."""
    if getattr(broker, feature):
        return
    reason = f"the {broker.kind} broker lacks what this test needs: {feature}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run every MQTT test: {reason}")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def mqtt_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    choice = os.environ.get("KASKAD_TEST_BROKER", "")
    if os.environ.get("KASKAD_TEST_OWN_BROKER") == "1":  # the older switch
        choice = choice or "mosquitto"
    if choice in ("", "local") and await port_open(HOST, 1883):
        yield Broker(1883, "local", shared=True, redelivers=True)
        return
    exe = shutil.which("mosquitto")
    if choice in ("", "mosquitto") and exe is not None:
        async with _mosquitto(exe, tmp_path) as port:
            yield Broker(port, "mosquitto", shared=True, redelivers=True)
        return
    async with _amqtt() as port:
        yield Broker(port, "amqtt", shared=False, redelivers=False, username="kaskad-test")


@contextlib.asynccontextmanager
async def _mosquitto(exe: str, tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\n")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-c",
        str(conf),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_port(HOST, port, within=10)
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def _amqtt() -> AsyncIterator[int]:
    """An amqtt broker on this test's event loop: QoS 1, persistent sessions and the
    redelivery of unacknowledged messages on reconnect, all the daemon relies on but $share."""
    from amqtt.broker import Broker as AmqttBroker

    port = free_port()
    # Its per-packet INFO and DEBUG lines would drown a failing test's output.
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    broker = AmqttBroker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
            # Any client with a user name (see Broker.username); the password is not checked.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}
            },
        }
    )
    # Listening once start() returns (a bare probe of the port would only make it log an
    # error and leave that socket unclosed).
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()
