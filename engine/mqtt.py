"""MQTT ingest (aiomqtt): QoS 1, persistent session, ack only after the events are stored.

Invalid payloads go to the dead-letter topic with the error and are acked (they would fail
again); a store failure leaves the message un-acked so the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlparse

import aiomqtt
import structlog

from .api.ingest import _decode
from .api.state import AppState
from .events import parse_batch

log = structlog.get_logger("kaskad.mqtt")


def _subscription(topic: str, group: str | None) -> str:
    return f"$share/{group}/{topic}" if group else topic


async def handle_payload(state: AppState, payload: bytes) -> tuple[bool, str | None]:
    """(stored, error): store the events of one MQTT message; error for the dead letter."""
    try:
        values = _decode(payload, "application/json")
    except (ValueError, UnicodeDecodeError) as exc:
        return False, str(exc)
    limits = state.config.server
    if len(values) > limits.max_batch_events:
        return False, f"{len(values)} events, over the limit of {limits.max_batch_events}"
    now = state.clock.now()
    events, problems = parse_batch(values, received_at=now, max_bytes=limits.max_event_bytes)
    if problems:
        return False, "; ".join(f"[{p.index}] {p.field}: {p.message}" for p in problems)
    rows = [
        (e.id, json.dumps(e.to_json(), separators=(",", ":"), ensure_ascii=False)) for e in events
    ]
    accepted, duplicates = await state.store.enqueue(rows, now)
    state.processor.note_enqueued(accepted)
    state.processor.wake.set()
    state.metrics.accepted.inc(accepted)
    state.metrics.duplicates.inc(duplicates)
    return True, None


async def run_mqtt(state: AppState) -> None:
    cfg = state.config.mqtt
    url = urlparse(cfg.url or "")
    delay_s = 1.0
    while True:
        try:
            client = aiomqtt.Client(
                hostname=url.hostname or "localhost",
                port=url.port or 1883,
                username=url.username,
                password=url.password,
                identifier=cfg.client_id,
                clean_session=False,  # persistent session: QoS 1 messages wait for us
            )
            # PUBACK only after the store commit: paho's manual acknowledgement (aiomqtt
            # exposes no switch for it, so it is set on the paho client it wraps).
            client._client.manual_ack_set(True)
            async with client:
                for topic in cfg.topics:
                    await client.subscribe(_subscription(topic, cfg.shared_group), qos=cfg.qos)
                state.broker_ok, state.broker_error = True, None
                delay_s = 1.0
                log.info("mqtt.connected", host=url.hostname, topics=cfg.topics)
                async for message in client.messages:
                    await _one(state, client, message)
        except asyncio.CancelledError:
            raise
        except aiomqtt.MqttError as exc:
            state.broker_ok, state.broker_error = False, str(exc)
            log.warning("mqtt.disconnected", error=str(exc), retry_in_s=delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 30.0)


async def _one(state: AppState, client: aiomqtt.Client, message: Any) -> None:
    payload = (
        message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
    )
    try:
        stored, error = await handle_payload(state, payload)
    except Exception as exc:
        # The store failed: no ack, the broker redelivers after reconnect.
        log.error("mqtt.store_failed", error=repr(exc))
        raise aiomqtt.MqttError(f"store failed: {exc}") from exc
    if not stored:
        state.metrics.dead_letters.inc()
        dead = {
            "error": error,
            "topic": str(message.topic),
            "payload": payload.decode("utf-8", "replace"),
        }
        await client.publish(state.config.mqtt.dead_letter_topic, json.dumps(dead), qos=1)
        log.warning("mqtt.dead_letter", topic=str(message.topic), error=error)
    client._client.ack(message.mid, message.qos)
