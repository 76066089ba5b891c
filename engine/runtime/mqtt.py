"""MQTT ingest (aiomqtt): QoS 1, persistent session, ack only after the events are stored.

A payload that is not a valid batch, or that the store refuses for what it holds, is bad
input: it goes to the dead-letter topic with the error and is acked (it would fail again).
A store that cannot write (down, locked, full) leaves the message un-acked, so the broker
redelivers it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiomqtt
import structlog

from engine.lang.config import MqttConfig
from engine.runtime.intake import Intake, TooMany, decode
from engine.runtime.metrics import Metrics

log = structlog.get_logger("kaskad.mqtt")
# What a dead letter quotes of the payload it refuses (the broker's own limit is larger).
_DEAD_PAYLOAD_CHARS = 64 * 1024


@dataclass
class BrokerStatus:
    """What /readyz says of the broker: None while none is configured."""

    ok: bool | None = None
    error: str | None = None


def _subscription(topic: str, group: str | None) -> str:
    return f"$share/{group}/{topic}" if group else topic


class StoreDown(RuntimeError):
    """The store could not take a valid batch, through no fault of the batch: redeliver."""


# PostgreSQL's SQLSTATE classes that blame the data: 22 data exception, 23 integrity
# constraint, 54 program limit exceeded. Every other class blames the store: 08 connection,
# 53 insufficient resources (a full disk), 57 operator intervention, 40 rollback...
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def _store_fault(exc: Exception) -> bool | None:
    """Whose fault a failed enqueue is: True the store's (keep the message), False the
    batch's (dead letter), None unknown (whether the store answers a ping decides)."""
    sqlstate = getattr(exc, "sqlstate", None)  # asyncpg's errors from the server
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] not in _DATA_SQLSTATE_CLASSES
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return False
    # SQLite: locked or busy past its timeout, disk full, I/O error, read-only, corrupt. A
    # ping (SELECT 1) succeeds through all of those: it writes nothing.
    if isinstance(exc, sqlite3.Error | OSError):
        return True
    return None


async def handle_payload(intake: Intake, payload: bytes) -> str | None:
    """Store the events of one MQTT message; the error for the dead letter, or None.

    Raises StoreDown when the store is unavailable (the message must not be acked).
    """
    limit = intake.limits.max_body_bytes
    if len(payload) > limit:  # as HTTP ingest (413): never parsed
        return f"payload is {len(payload)} bytes, over the limit of {limit}"
    try:
        decoded = decode(payload, "application/json")
        if not decoded.values:
            return "no events in the payload"
        now = intake.clock.now()
        rows, problems = intake.validate(decoded, now)
    except TooMany as exc:
        return str(exc)
    except (ValueError, UnicodeError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    if problems:
        return "; ".join(f"[{p.index}] {p.field}: {p.message}" for p in problems)
    try:
        await intake.accept(rows, now)
    except Exception as exc:
        # Bad input or a store that cannot write? Where the error does not say, a store that
        # answers a ping refused this batch for what it holds: that is the payload's fault,
        # and it would fail again.
        fault = _store_fault(exc)
        if fault:
            raise StoreDown(f"store failed: {exc!r}") from exc
        if fault is None:
            try:
                await intake.store.ping()
            except Exception as down:
                raise StoreDown(f"store failed: {exc!r}; ping: {down!r}") from exc
        log.warning("mqtt.unstorable", error=repr(exc))
        return f"cannot be stored: {type(exc).__name__}: {exc}"[:500]
    return None


async def run_mqtt(
    config: MqttConfig, intake: Intake, status: BrokerStatus, metrics: Metrics
) -> None:
    url = urlparse(config.url or "")
    delay_s = 1.0
    while True:
        try:
            client = aiomqtt.Client(
                hostname=url.hostname or "localhost",
                port=url.port or 1883,
                username=url.username,
                password=url.password,
                identifier=config.resolved_client_id(socket.gethostname(), os.getpid()),
                clean_session=False,  # persistent session: QoS 1 messages wait for us
            )
            # PUBACK only after the store commit: paho's manual acknowledgement (aiomqtt
            # exposes no switch for it, so it is set on the paho client it wraps).
            client._client.manual_ack_set(True)
            async with client:
                for topic in config.topics:
                    await client.subscribe(
                        _subscription(topic, config.shared_group), qos=config.qos
                    )
                status.ok, status.error = True, None
                delay_s = 1.0
                log.info("mqtt.connected", host=url.hostname, topics=config.topics)
                async for message in client.messages:
                    await _one(config, intake, metrics, client, message)
        except asyncio.CancelledError:
            raise
        except aiomqtt.MqttError as exc:
            status.ok, status.error = False, str(exc)
            log.warning("mqtt.disconnected", error=str(exc), retry_in_s=delay_s)
        except Exception as exc:
            # A bug must not end MQTT ingest for good while /readyz says the broker is fine:
            # say so, and connect again (the message in hand was not acked: it comes again).
            status.ok, status.error = False, f"ingest failed: {exc!r}"
            log.exception("mqtt.failed", retry_in_s=delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 30.0)


async def _one(
    config: MqttConfig, intake: Intake, metrics: Metrics, client: aiomqtt.Client, message: Any
) -> None:
    payload = (
        message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
    )
    try:
        error = await handle_payload(intake, payload)
    except StoreDown as exc:
        # No ack: the broker redelivers after we reconnect.
        log.error("mqtt.store_failed", error=str(exc))
        raise aiomqtt.MqttError(str(exc)) from exc
    if error is not None:
        metrics.dead_letters.inc()
        dead = {
            "error": error,
            "topic": str(message.topic),
            "payload": payload[:_DEAD_PAYLOAD_CHARS].decode("utf-8", "replace"),
        }
        try:
            await client.publish(config.dead_letter_topic, json.dumps(dead), qos=1)
        except aiomqtt.MqttError:
            raise  # the connection is gone: no ack, the message comes again
        except Exception as exc:
            # A publish paho refuses (the config refuses a dead_letter_topic with a
            # wildcard, but not every refusal can be foreseen): the log keeps the dead
            # letter, and the stream goes on.
            log.error(
                "mqtt.dead_letter_failed",
                dead_letter_topic=config.dead_letter_topic,
                why=repr(exc),
                topic=str(message.topic),
                error=error[:200],
                payload=dead["payload"][:1000],
            )
        else:
            log.warning("mqtt.dead_letter", topic=str(message.topic), error=error[:200])
    client._client.ack(message.mid, message.qos)
