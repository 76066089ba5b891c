"""POST /v1/events stores each event as it came (parsed once, not serialised again) and the
engine reads back the very event that ingest validated."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.clock import iso, parse_time
from engine.lang.events import parse_event
from engine.runtime.intake import decode

from .helpers import START, Client


def _fast(body: bytes) -> list[Any] | None:
    """The values when orjson read the body, None when it took the stdlib path."""
    try:
        decoded = decode(body, "application/json")
    except ValueError:
        return None  # invalid: only the stdlib path raises, with its own wording
    return decoded.values if decoded.fast else None


CART = {"items": [{"product_id": 7, "price": 30, "qty": 1}], "total": 30}


@pytest.mark.parametrize(
    "body",
    [
        '[{"type": "a.b", "user_id": "u"}, {"type": "c", "user_id": 1}]',
        ' \n[ {"a": [1, 2.5, -3e2, -0, null, true, "\\u00e9\\n\\ud83d\\ude00"]} ,{"b":{}} ]\r\n',
        "[]",
        '{"type": "a", "data": {"x": "ü", "n": 922337203685477580, "f": 1.5e-7}}',
        '[1, "two", [3], {"k": 1, "k": 2}]',
    ],
)
def test_the_fast_decoder_reads_what_json_loads_reads(body: str) -> None:
    found = _fast(body.encode())
    expected = json.loads(body)
    assert found is not None
    assert repr(found) == repr(expected if isinstance(expected, list) else [expected])


@pytest.mark.parametrize(
    "body",
    [
        '{"type": ',  # invalid: the stdlib words the error
        '[{"a": 1},]',
        '[{"a": 1}] x',
        '{"a": 1}\n{"b": 2}\n',  # NDJSON sent as application/json
        "[NaN, Infinity]",  # json.loads takes them, orjson does not
        "[1e999]",
        '["\\ud800"]',  # a lone surrogate
        '[{"n": 18446744073709551616}]',  # orjson would make a float of it
        '[{"n": -9223372036854775809}]',
        '[{"s": "card 1234567890123456789"}]',  # 19 digits anywhere: the careful path
        "\ufeff[]",
    ],
)
def test_anything_orjson_reads_otherwise_takes_the_stdlib_path(body: str) -> None:
    assert _fast(body.encode()) is None


async def _inbox(client: Client) -> list[dict[str, Any]]:
    rows = await client.daemon.store.inbox_batch(100)
    return [json.loads(body) for _, body, _ in rows]


async def test_events_are_stored_as_sent_with_the_receive_time_written_in(
    client: Client,
) -> None:
    sent = [
        {"id": "e1", "type": "cart.updated", "user_id": 42, "time": "2026-11-23T09:00:00.123456Z"},
        {"type": "cart.updated", "user_id": "u2", "data": CART},  # no time: the receive time
        {"type": "cart.updated", "user_id": "u3", "time": None, "data": None},
    ]
    body = json.dumps(sent, indent=2)  # spacing and newlines inside and between the events
    status, answer = await client.request(
        "POST",
        "/v1/events",
        data=body,
        headers={"Authorization": "Bearer ingest-token", "Content-Type": "application/json"},
    )
    assert (status, answer) == (202, {"accepted": 3, "duplicates": 0})
    stored = await _inbox(client)
    assert stored[0] == sent[0]
    assert stored[1] == {"time": iso(START), **sent[1]}
    assert stored[2] == {**sent[2], "time": iso(START)}
    # The engine, parsing a stored row later, gets the event ingest accepted.
    later = START + 3600
    events = [parse_event(row, received_at=later) for row in stored]
    assert [(e.user_id, e.time) for e in events] == [
        ("42", parse_time("2026-11-23T09:00:00.123456Z")),
        ("u2", START),
        ("u3", START),
    ]
    assert events[1].data["items"][0]["product_id"] == 7
    assert events[2].data == {}
    await client.advance(0)
    assert await client.daemon.store.inbox_size() == 0


async def test_the_size_limit_applies_to_the_event_not_its_spacing(client: Client) -> None:
    limit = client.daemon.config.server.max_event_bytes
    event = {"type": "x.y", "user_id": "u", "data": {"blob": "a" * (limit - 100)}}
    padded = '[{"type": "x.y",' + " " * 200 + json.dumps(event)[len('{"type": "x.y",') :] + "]"
    assert len(padded.encode()) > limit + 100
    status, answer = await client.request(
        "POST",
        "/v1/events",
        data=padded,
        headers={"Authorization": "Bearer ingest-token", "Content-Type": "application/json"},
    )
    assert (status, answer) == (202, {"accepted": 1, "duplicates": 0})
    (stored,) = await _inbox(client)
    assert stored["data"] == event["data"]
    over = {"type": "x.y", "user_id": "u", "data": {"blob": "a" * limit}}
    status, answer = await client.post_events([event, over])
    assert status == 400
    assert [(p["index"], p["field"]) for p in answer["error"]["details"]] == [(1, "(event)")]


def _nested(levels: int) -> dict[str, Any]:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(levels - 1):
        node["a"] = {}
        node = node["a"]
    return deep


async def test_what_orjson_would_read_otherwise_is_stored_exactly(client: Client) -> None:
    # A 20-digit number stays an integer; an event nested to the limit (64 levels: the
    # event, its data, 62 more) is stored as it was sent, on either path.
    sent = [
        {"type": "order.created", "user_id": "u1", "data": {"order_id": 12345678901234567890123}},
        {"type": "x.y", "user_id": "u2", "time": "2026-11-23T09:00:00Z", "data": _nested(63)},
    ]
    assert (await client.post_events(sent[:1]))[0] == 202
    assert (await client.post_events(sent[1:]))[0] == 202
    stored = await _inbox(client)
    assert stored[0]["data"]["order_id"] == 12345678901234567890123
    assert stored[0]["time"] == iso(START)
    assert stored[1] == sent[1]


async def test_an_event_nested_past_the_limit_is_refused_by_its_path(client: Client) -> None:
    # 300 levels: orjson reads it, but no event may nest more than 64 (the stdlib writer
    # would need 300 frames of the stack for it).
    deep = {"type": "x.y", "user_id": "u2", "data": _nested(300)}
    status, answer = await client.post_events([deep])
    assert status == 400
    assert answer["error"]["details"] == [
        {"index": 0, "field": "data" + ".a" * 63, "message": "nests deeper than 64 levels"}
    ]
