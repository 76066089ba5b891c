"""Issue 9: bad input never gives a 5xx. The exact hostile requests the review's fuzzing
found, byte for byte (a raw socket: header bytes that are not UTF-8, lone surrogates that
only JSON can spell), each with the 4xx that names its problem; on SQLite and PostgreSQL,
where a NUL cannot be stored at all. Nothing of them reaches the inbox."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from tests.pgdb import pg_schema

from .helpers import RECEIPT_CHANNELS, START, TRACKING, Client, make_config

INGEST = [(b"Authorization", b"Bearer ingest-token")]
ADMIN = [(b"Authorization", b"Bearer admin-token")]
JSON = [(b"Content-Type", b"application/json")]
NDJSON = [(b"Content-Type", b"application/x-ndjson")]
DEEP = b"[" * 5000 + b"]" * 5000  # past the stdlib parser's recursion (and orjson's 1024)
NESTED_100 = b"[" * 100 + b"]" * 100  # parsed fine, but past 64 levels in an event
SURROGATE = "holds a lone surrogate (\\ud800), which is not text"
NUL = "holds a NUL character (\\u0000)"
TOO_LONG = "must be a non-empty string of at most 200 characters"
NOT_FINITE = "must be a finite number (NaN and Infinity are not JSON numbers)"
MONEY_RANGE = "must be a number from -1e15 to 1e15"
TYPE_PATTERN = "must match [a-z0-9_]+(.[a-z0-9_]+)*, e.g. cart.updated"
CURSOR_NAN = base64.urlsafe_b64encode(b'["nan", "x"]').decode().rstrip("=")


def event(**fields: Any) -> bytes:
    return json.dumps({"type": "cart.updated", "user_id": "u1", **fields}).encode()


def signed_stamp(body: bytes, stamp: str = str(int(START))) -> list[tuple[bytes, bytes]]:
    mac = hmac.new(b"hmac-secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return [
        (b"X-Kaskad-Timestamp", stamp.encode()),
        (b"X-Kaskad-Signature", b"sha256=" + mac.encode()),
    ]


def whatsapp(body: bytes) -> list[tuple[bytes, bytes]]:
    mac = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest().encode()
    return [(b"X-Hub-Signature-256", b"sha256=" + mac), *JSON]


def token(kind: str, payload: bytes) -> str:
    """A tracking token signed with the test's secret around any JSON text."""
    mac = hmac.digest(b"track-secret", payload, "sha256")[:16]
    b64 = base64.urlsafe_b64encode
    return f"{b64(payload).decode().rstrip('=')}.{b64(mac).decode().rstrip('=')}"


DEEP_TOKEN = b'{"k":"%s","m":' + b"[" * 2000 + b"]" * 2000 + b"}"


@dataclass(frozen=True)
class Hostile:
    name: str
    method: str
    target: str
    status: int
    code: str | None = None  # error.code of a JSON answer; None: not JSON (pages, pixel)
    detail: dict[str, Any] | None = None  # the first of error.details
    message: str | None = None  # a part of error.message
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


def case(
    name: str,
    method: str,
    target: str,
    status: int,
    code: str | None = None,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    **kw: Any,
) -> Hostile:
    return Hostile(
        name, method, target, status, code, headers=tuple(headers or ()), body=body, **kw
    )


def invalid(index: int, field: str, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}


CASES = [
    # a. strings no store can keep, anywhere in an event: 400 with index and field
    case(
        "surrogate in data (stdlib path)",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=b'{"type":"cart.updated","user_id":"u1","data":{"items":[{"product_id":"p1","name":"\\ud800"}]}}',
        detail=invalid(0, "data.items[0].name", SURROGATE),
    ),
    case(
        "surrogate in a key of the second event",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=b'[{"type":"a.b","user_id":"u1"},{"type":"a.b","user_id":"u1","data":{"\\ud800":1}}]',
        detail=invalid(1, "data", f"has a key that {SURROGATE}"),
    ),
    case(
        "surrogate in time (quoted in the message)",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(time="\ud800"),
        detail=invalid(0, "time", SURROGATE),
    ),
    case(
        "surrogate on an NDJSON line",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + NDJSON,
        body=event() + b"\n" + event(data={"q": "\ud800"}) + b"\n",
        detail=invalid(1, "data.q", SURROGATE),
    ),
    case(
        "NUL in user_id (orjson path)",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(user_id="u\x00"),
        detail=invalid(0, "user_id", NUL),
    ),
    case(
        "NUL deep in data",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(data={"a": {"b": ["ok", "x\x00"]}}),
        detail=invalid(0, "data.a.b[1]", NUL),
    ),
    case(
        "NUL in a key",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(data={"k\x00": 1}),
        detail=invalid(0, "data", f"has a key that {NUL}"),
    ),
    case(
        "user_id over 200 characters",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(user_id="u" * 201),
        detail=invalid(0, "user_id", TOO_LONG),
    ),
    # h. numbers JSON has not (the stdlib parser reads them), money past any shop's figure
    *(
        case(
            f"{literal.decode()} as an order total",
            "POST",
            "/v1/events",
            400,
            "invalid_events",
            headers=INGEST + JSON,
            body=b'{"type":"order.created","user_id":"u1","data":{"total":%s}}' % literal,
            detail=invalid(0, "data.total", NOT_FINITE),
        )
        for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999")
    ),
    case(
        "Infinity deep in the data of the second event",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=b'[{"type":"a.b","user_id":"u1"},{"type":"a.b","user_id":"u1","data":{"x":[1,Infinity]}}]',
        detail=invalid(1, "data.x[1]", NOT_FINITE),
    ),
    case(
        "NaN on an NDJSON line",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + NDJSON,
        body=event() + b"\n" + b'{"type":"a.b","user_id":"u1","data":{"score":NaN}}\n',
        detail=invalid(1, "data.score", NOT_FINITE),
    ),
    case(
        "NaN in a profile",
        "PUT",
        "/v1/profiles/u1",
        400,
        "invalid_profile",
        headers=ADMIN + JSON,
        body=b'{"attributes": {"ltv": NaN}}',
        detail={"field": "data.attributes.ltv", "message": NOT_FINITE},
    ),
    *(
        case(
            f"order total {literal[:12].decode()}",
            "POST",
            "/v1/events",
            400,
            "invalid_events",
            headers=INGEST + JSON,
            body=b'{"type":"order.created","user_id":"u1","data":{"total":%s}}' % literal,
            detail=invalid(0, "data.total", MONEY_RANGE),
        )
        for literal in (b"1e16", b"1.7e308", b"-1e300", b"1" + b"0" * 400)
    ),
    case(
        "an item price of 1e300",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=b'{"type":"cart.updated","user_id":"u1","data":{"items":[{"price":1e300}]}}',
        detail=invalid(0, "data.items[0].price", MONEY_RANGE),
    ),
    case(
        "a type with a trailing newline",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=event(type="shop.visited\n"),
        detail=invalid(0, "type", TYPE_PATTERN),
    ),
    # d. nesting: past any parser, or past 64 levels in an event
    case(
        "events nested 5000 deep",
        "POST",
        "/v1/events",
        400,
        "malformed",
        headers=INGEST + JSON,
        body=DEEP,
        message="at most 64 levels",
    ),
    case(
        "events nested 5000 deep, NDJSON",
        "POST",
        "/v1/events",
        400,
        "malformed",
        headers=INGEST + NDJSON,
        body=event() + b"\n" + DEEP,
        message="line 2: JSON nested",
    ),
    case(
        "an event nested 100 deep",
        "POST",
        "/v1/events",
        400,
        "invalid_events",
        headers=INGEST + JSON,
        body=b'{"type":"a.b","user_id":"u1","data":{"x":' + NESTED_100 + b"}}",
        detail=invalid(0, "data.x" + "[0]" * 62, "nests deeper than 64 levels"),
    ),
    case(
        "profile nested 5000 deep",
        "PUT",
        "/v1/profiles/u1",
        400,
        "malformed",
        headers=ADMIN + JSON,
        body=DEEP,
        message="nested deeper than 64 levels",
    ),
    case(
        "profile nested 100 deep",
        "PUT",
        "/v1/profiles/u1",
        400,
        "invalid_profile",
        headers=ADMIN + JSON,
        body=b'{"attributes":{"x":' + NESTED_100 + b"}}",
        message="nests deeper than 64 levels",
    ),
    case(
        "WhatsApp receipt nested 5000 deep",
        "POST",
        "/v1/callbacks/whatsapp",
        400,
        "malformed",
        headers=whatsapp(DEEP),
        body=DEEP,
        message="nested deeper than 64 levels",
    ),
    # b. PUT profile and path parameters
    case(
        "surrogate in a profile",
        "PUT",
        "/v1/profiles/u1",
        400,
        "invalid_profile",
        headers=ADMIN + JSON,
        body=b'{"email": "a\\ud800@example.com"}',
        detail={"field": "data.email", "message": SURROGATE},
    ),
    case(
        "NUL in a profile's consent key",
        "PUT",
        "/v1/profiles/u1",
        400,
        "invalid_profile",
        headers=ADMIN + JSON,
        body=b'{"consent": {"e\\u0000mail": true}}',
        detail={"field": "data.consent", "message": f"has a key that {NUL}"},
    ),
    *(
        case(
            f"{method} {path} with NUL",
            method,
            path,
            400,
            "invalid_parameter",
            headers=ADMIN,
            detail={"field": "user_id", "message": NUL},
        )
        for method, path in [
            ("GET", "/v1/profiles/u%00"),
            ("PUT", "/v1/profiles/u%00"),
            ("DELETE", "/v1/profiles/u%00"),
            ("GET", "/v1/users/u%00/timeline"),
            ("GET", "/v1/messages?user_id=u%00"),
        ]
    ),
    case(
        "GET a profile whose id is over 200 characters",
        "GET",
        "/v1/profiles/" + "u" * 201,
        400,
        "invalid_parameter",
        headers=ADMIN,
        detail={"field": "user_id", "message": TOO_LONG},
    ),
    case(
        "the timeline of an id over 200 characters",
        "GET",
        f"/v1/users/{'u' * 201}/timeline",
        400,
        "invalid_parameter",
        headers=ADMIN,
        detail={"field": "user_id", "message": TOO_LONG},
    ),
    case(
        "messages of a rule with NUL",
        "GET",
        "/v1/messages?rule=r%00",
        400,
        "invalid_parameter",
        headers=ADMIN,
        detail={"field": "rule", "message": NUL},
    ),
    case(
        "messages with a status with NUL",
        "GET",
        "/v1/messages?status=%00",
        400,
        "invalid_parameter",
        headers=ADMIN,
        detail={"field": "status", "message": NUL},
    ),
    # c. credentials that are not ASCII: 401 (403 for Twilio, as for any wrong signature)
    case(
        "ingest Bearer in UTF-8",
        "POST",
        "/v1/events",
        401,
        "unauthorized",
        headers=[(b"Authorization", "Bearer é".encode()), *JSON],
        body=event(),
    ),
    case(
        "ingest Bearer not UTF-8",
        "POST",
        "/v1/events",
        401,
        "unauthorized",
        headers=[(b"Authorization", b"Bearer \xff\xfe"), *JSON],
        body=event(),
    ),
    case(
        "admin Bearer in UTF-8",
        "GET",
        "/v1/messages",
        401,
        "unauthorized",
        headers=[(b"Authorization", "Bearer é".encode())],
    ),
    case(
        "dashboard Bearer not UTF-8",
        "GET",
        "/",
        401,
        headers=[(b"Authorization", b"Bearer \xff")],
    ),
    case(
        "X-Kaskad-Signature in UTF-8",
        "POST",
        "/v1/events",
        401,
        "unauthorized",
        headers=[*signed_stamp(event())[:1], (b"X-Kaskad-Signature", "sha256=é".encode()), *JSON],
        body=event(),
        message="does not match",
    ),
    case(
        "X-Twilio-Signature in UTF-8",
        "POST",
        "/v1/callbacks/sms",
        403,
        "forbidden",
        headers=[
            (b"X-Twilio-Signature", "é".encode()),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ],
        body=b"MessageSid=SM1&MessageStatus=delivered",
    ),
    case(
        "X-Twilio-Signature not UTF-8",
        "POST",
        "/v1/callbacks/sms",
        403,
        "forbidden",
        headers=[(b"X-Twilio-Signature", b"\xff")],
    ),
    case(
        "X-Hub-Signature-256 not UTF-8",
        "POST",
        "/v1/callbacks/whatsapp",
        401,
        "unauthorized",
        headers=[(b"X-Hub-Signature-256", b"sha256=\xff"), *JSON],
        body=b"{}",
    ),
    case(
        "session cookie with a superscript digit",
        "GET",
        "/",
        401,
        headers=[(b"Cookie", "kaskad_session=\u00b2.x".encode())],
    ),
    case(
        "session cookie of 5000 digits",
        "GET",
        "/",
        401,
        headers=[(b"Cookie", b"kaskad_session=" + b"9" * 5000 + b".x")],
    ),
    case(
        "session cookie with a non-ASCII mac",
        "GET",
        "/",
        401,
        headers=[(b"Cookie", "kaskad_session=99999999999.é".encode())],
    ),
    # e. durations past a float
    case(
        "stats since 400 digits of days",
        "GET",
        "/v1/stats?since=-" + "9" * 400 + "d",
        400,
        "invalid_parameter",
        headers=ADMIN,
        message="since: duration '99999",
    ),
    case(
        "stats until 400 digits of weeks",
        "GET",
        "/v1/stats?until=" + "9" * 400 + "w",
        400,
        "invalid_parameter",
        headers=ADMIN,
        message="too long to count in seconds",
    ),
    case(
        "stats of a rule with NUL",
        "GET",
        "/v1/stats?rule=%00",
        400,
        "invalid_parameter",
        headers=ADMIN,
        detail={"field": "rule", "message": NUL},
    ),
    # f. tracking tokens nested past the parser (signed: only the secret's holder makes one)
    case("deep click token", "GET", "/t/c/" + token("c", DEEP_TOKEN % b"c"), 404, "not_found"),
    case("deep unsubscribe page", "GET", "/t/u/" + token("u", DEEP_TOKEN % b"u"), 404, "not_found"),
    case("deep unsubscribe", "POST", "/t/u/" + token("u", DEEP_TOKEN % b"u"), 404, "not_found"),
    case("deep pixel: the GIF", "GET", "/t/o/" + token("o", DEEP_TOKEN % b"o"), 200),
    # g. query strings
    *(
        case(
            f"messages limit={limit[:12]}",
            "GET",
            f"/v1/messages?limit={limit}",
            400,
            "invalid_parameter",
            headers=ADMIN,
            detail={"field": "limit", "message": "must be an integer 1-1000"},
        )
        for limit in ["-1", "0", "1001", "1" + "0" * 30, "1e3", "%D9%A1", "abc"]
    ),
    *(
        case(
            f"messages cursor={cursor[:12]}",
            "GET",
            f"/v1/messages?cursor={cursor}",
            400,
            "invalid_parameter",
            headers=ADMIN,
            detail={"field": "cursor", "message": "is not one this API gave out"},
        )
        for cursor in ["!!!", "W10", "WzEsMiwzXQ", CURSOR_NAN, "%C3%A9", "A" * 1000]
    ),
    case("dashboard user search with NUL", "GET", "/ui/users?q=u%00", 400, headers=ADMIN),
    case(
        "dashboard messages of a rule with NUL", "GET", "/ui/messages?rule=%00", 400, headers=ADMIN
    ),
    case("dashboard rule page with NUL", "GET", "/ui/rules/r%00", 400, headers=ADMIN),
]


async def raw(
    port: int, method: str, target: str, headers: tuple[tuple[bytes, bytes], ...], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request as exactly these bytes; (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"{method} {target} HTTP/1.1".encode(),
        b"Host: kaskad.test",
        b"Connection: close",
        b"Content-Length: %d" % len(body),
        *(name + b": " + value for name, value in headers),
    ]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # a hang fails, not waits
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), fields, payload


def problems_with(c: Hostile, status: int, headers: dict[str, str], payload: bytes) -> list[str]:
    if status != c.status:
        return [f"status {status}, expected {c.status}: {payload[:300]!r}"]
    if c.code is None:
        return []
    answer = json.loads(payload)["error"]
    found = []
    if answer["code"] != c.code:
        found.append(f"code {answer['code']!r}, expected {c.code!r}")
    if c.detail is not None and (answer["details"] or [None])[0] != c.detail:
        found.append(f"details {answer['details']!r}, expected {c.detail!r} first")
    if c.message is not None and c.message not in answer["message"]:
        found.append(f"message {answer['message']!r} lacks {c.message!r}")
    return found


@contextlib.asynccontextmanager
async def _storage(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "postgres":
        async with pg_schema() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path}/kaskad.db"


@pytest.fixture(params=["sqlite", "postgres"])
async def hostile(
    request: pytest.FixtureRequest, tmp_path: Path, rules_dir: Path
) -> AsyncIterator[Client]:
    """A daemon with callbacks and tracking set up, on SQLite and on PostgreSQL."""
    async with _storage(request.param, tmp_path) as url:
        extra = TRACKING + RECEIPT_CHANNELS
        config = make_config(tmp_path, rules_dir, extra=extra, storage_url=url)
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            yield Client(daemon, session)
        await daemon.stop()


async def test_each_hostile_request_gets_the_4xx_that_names_it(hostile: Client) -> None:
    failures = []
    for c in CASES:
        status, headers, payload = await raw(
            hostile.daemon.port, c.method, c.target, c.headers, c.body
        )
        failures += [f"{c.name}: {p}" for p in problems_with(c, status, headers, payload)]
    assert not failures, "\n".join(failures)
    # None of them stored anything, and the engine has nothing to choke on.
    assert await hostile.daemon.store.inbox_size() == 0
    await hostile.daemon.pump()


async def test_a_bad_request_never_fails_a_good_one_beside_it(hostile: Client) -> None:
    port = hostile.daemon.port
    bad_profile = raw(port, "PUT", "/v1/profiles/u1", tuple(ADMIN + JSON), b'{"email":"\\ud800"}')
    good_profile = raw(port, "PUT", "/v1/profiles/u2", tuple(ADMIN + JSON), b'{"email":"a@b.c"}')
    bad_events = raw(port, "POST", "/v1/events", tuple(INGEST + JSON), event(user_id="u\x00"))
    good_events = raw(port, "POST", "/v1/events", tuple(INGEST + JSON), event(user_id="u3"))
    answers = await asyncio.gather(bad_profile, good_profile, bad_events, good_events)
    assert [status for status, _, _ in answers] == [400, 200, 400, 202]
    await hostile.daemon.pump()
    status, profile = await hostile.admin("GET", "/v1/profiles/u2")
    assert (status, profile["email"]) == (200, "a@b.c")
    assert (await hostile.admin("GET", "/v1/profiles/u1"))[0] == 404


async def test_tokens_are_compared_as_bytes_whatever_they_hold(client: Client) -> None:
    """The config refuses tokens a header cannot carry; should one reach the server anyway,
    a request with any credentials is answered 401 or let in, never 500."""
    auth = client.daemon.state.config.auth
    auth.admin_token, auth.metrics_token, auth.ingest_tokens = "tökén", "mé", ["ïn"]
    port = client.daemon.port

    async def status(method: str, target: str, token: bytes, body: bytes = b"") -> int:
        headers = ((b"Authorization", b"Bearer " + token), *JSON)
        return (await raw(port, method, target, headers, body))[0]

    for token in (b"abc", "tök".encode(), b"\xff", "tökén".encode("latin-1")):
        await client.advance(61)  # each token's 3 wrong tries in a minute of their own: no 429
        assert await status("GET", "/v1/messages", token) == 401, token
        assert await status("GET", "/metrics", token) == 401, token
        assert await status("POST", "/v1/events", token, event()) == 401, token
        assert await status("GET", "/", token) == 401, token
    assert await status("GET", "/v1/messages", "tökén".encode()) == 200
    assert await status("GET", "/metrics", "mé".encode()) == 200
    assert await status("POST", "/v1/events", "ïn".encode(), event()) == 202
    assert await status("GET", "/", "tökén".encode()) == 200
    form = ((b"Content-Type", b"application/x-www-form-urlencoded"),)
    for token, expected in ((b"abc", 401), (b"t%C3%B6k%C3%A9n", 303), (b"%FF%ED%A0%80", 401)):
        answer = await raw(port, "POST", "/ui/login", form, b"token=" + token + b"&next=/")
        assert answer[0] == expected, token
