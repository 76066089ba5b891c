"""The event envelope (SPEC 2): every problem names its field; batches report by index."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.clock import parse_time
from engine.errors import EventError
from engine.lang.events import MAX_EVENT_BYTES, BatchProblem, parse_batch, parse_event

RECEIVED = parse_time("2026-11-23T12:00:00Z")
SUB = {"endpoint": "https://push.example/abc", "keys": {"p256dh": "BNc", "auth": "tBH"}}


def user_event(etype: str = "cart.updated", **data: Any) -> dict[str, Any]:
    return {"type": etype, "user_id": "u1", "time": "2026-11-23T10:00:00Z", "data": data}


def profile_update(**data: Any) -> dict[str, Any]:
    return user_event("profile.updated", **data)


def error_of(obj: Any, max_bytes: int | None = None) -> tuple[str, str]:
    with pytest.raises(EventError) as info:
        parse_event(obj, received_at=RECEIVED, max_bytes=max_bytes)
    assert str(info.value) == f"{info.value.field}: {info.value.message}"
    return info.value.field, info.value.message


TYPE_PATTERN = "must match [a-z0-9_]+(.[a-z0-9_]+)*, e.g. cart.updated"
MESSAGE_DATA = "needs 'message_id', or 'rule' and 'channel'"
SUBSCRIPTION = "must be {endpoint, keys: {p256dh, auth}}"
NOT_FINITE = "must be a finite number (NaN and Infinity are not JSON numbers)"
MONEY_RANGE = "must be a number from -1e15 to 1e15"


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        # the envelope
        ([1, 2], "(event)", "must be a JSON object"),
        ("cart.updated", "(event)", "must be a JSON object"),
        ({"user_id": "u1"}, "type", "is required"),
        ({"type": "Cart.Updated", "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": "cart..updated", "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": "cart-updated", "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": "shop.visited\n", "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": "cart.updated\n", "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": 5, "user_id": "u1"}, "type", TYPE_PATTERN),
        ({"type": "cart.updated"}, "user_id", "is required"),
        ({"type": "cart.updated", "user_id": ""}, "user_id", "must be a non-empty string"),
        ({"type": "cart.updated", "user_id": True}, "user_id", "must be a non-empty string"),
        ({"type": "cart.updated", "user_id": ["u1"]}, "user_id", "must be a non-empty string"),
        (
            {"type": "product.price_dropped", "user_id": "u1", "data": {"product_id": "p1"}},
            "user_id",
            "must be absent: product.price_dropped is a product event",
        ),
        (
            {"type": "product.back_in_stock", "user_id": "u1", "data": {"product_id": "p1"}},
            "user_id",
            "must be absent: product.back_in_stock is a product event",
        ),
        (
            {**user_event(), "id": ""},
            "id",
            "must be a non-empty string of at most 200 characters",
        ),
        (
            {**user_event(), "id": "x" * 201},
            "id",
            "must be a non-empty string of at most 200 characters",
        ),
        (
            {**user_event(), "time": "yesterday"},
            "time",
            "'yesterday' is not ISO 8601, e.g. 2026-11-23T10:00:00Z",
        ),
        (
            {**user_event(), "time": "2026-13-45T10:00:00Z"},
            "time",
            "'2026-13-45T10:00:00Z' is not ISO 8601, e.g. 2026-11-23T10:00:00Z",
        ),
        (
            {**user_event(), "time": 1795428000},
            "time",
            "must be an ISO 8601 string, e.g. 2026-11-23T10:00:00Z",
        ),
        ({**user_event(), "data": [1]}, "data", "must be an object"),
        ({**user_event(), "data": "total=5"}, "data", "must be an object"),
        (
            {**user_event(), "payload": {}},
            "payload",
            "unknown envelope field; allowed: id, type, user_id, time, data",
        ),
        (
            {**user_event(), "userId": "u1"},
            "userId",
            "unknown envelope field; allowed: id, type, user_id, time, data",
        ),
        # standard data fields
        (user_event(items={}), "data.items", "must be a list"),
        (user_event(items=[1]), "data.items[0]", "must be an object"),
        (user_event(items=[{"product_id": [1]}]), "data.items[0].product_id", "must be a string"),
        (user_event(total="10"), "data.total", "must be a number"),
        (user_event("order.created", total=True), "data.total", "must be a number"),
        (user_event("bonus.credited", amount="5"), "data.amount", "must be a number"),
        # money: finite, at most 1e15 either side of 0 (stats sum it)
        (user_event("order.created", total=float("nan")), "data.total", NOT_FINITE),
        (user_event("order.created", total=float("inf")), "data.total", NOT_FINITE),
        (user_event("bonus.credited", amount=float("-inf")), "data.amount", NOT_FINITE),
        (user_event("order.created", total=1e16), "data.total", MONEY_RANGE),
        (user_event("order.created", total=10**400), "data.total", MONEY_RANGE),
        (user_event("points.accrued", balance=-1.7e308), "data.balance", MONEY_RANGE),
        (user_event(items=[{"price": 1}, {"price": 1e300}]), "data.items[1].price", MONEY_RANGE),
        (
            user_event("order.created", items=[{"price": float("nan")}]),
            "data.items[0].price",
            NOT_FINITE,
        ),
        (
            user_event("order.created", items=[{"price": "9.90"}]),
            "data.items[0].price",
            "must be a number",
        ),
        (user_event("product.viewed"), "data.product_id", "is required"),
        (user_event("favorite.added", product_id=True), "data.product_id", "must be a string"),
        (
            {"type": "product.price_dropped", "data": {"new_price": 5}},
            "data.product_id",
            "is required",
        ),
        (
            {"type": "product.price_dropped", "data": {"product_id": "p1", "new_price": "5"}},
            "data.new_price",
            "must be a number",
        ),
        # product.subscribed kind
        (
            user_event("product.subscribed", product_id="p1"),
            "data.kind",
            "must be 'price_drop' or 'back_in_stock'",
        ),
        (
            user_event("product.subscribed", product_id="p1", kind="sale"),
            "data.kind",
            "must be 'price_drop' or 'back_in_stock'",
        ),
        (
            user_event("product.unsubscribed", product_id="p1", kind="favorite"),
            "data.kind",
            "must be 'price_drop' or 'back_in_stock'",
        ),
        (user_event("product.subscribed", kind="price_drop"), "data.product_id", "is required"),
        # message.* need message_id, or rule + channel
        (user_event("message.opened"), "data", MESSAGE_DATA),
        (user_event("message.clicked", rule="abandoned_cart"), "data", MESSAGE_DATA),
        (user_event("message.delivered", channel="email"), "data", MESSAGE_DATA),
        (user_event("message.failed", rule="r", channel=5), "data", MESSAGE_DATA),
        (user_event("message.unsubscribed"), "data", MESSAGE_DATA),
        # profile field types
        (profile_update(email=5), "data.email", "must be a string or null"),
        (profile_update(phone=79990001122), "data.phone", "must be a string or null"),
        (profile_update(whatsapp=["7999"]), "data.whatsapp", "must be a string or null"),
        (profile_update(locale=1), "data.locale", "must be a string or null"),
        (profile_update(timezone=3), "data.timezone", "must be a string or null"),
        (
            profile_update(timezone="Mars/Olympus"),
            "data.timezone",
            "unknown timezone 'Mars/Olympus' (expected an IANA name such as Europe/Moscow)",
        ),
        (
            profile_update(timezone="localtime"),
            "data.timezone",
            "timezone 'localtime' is not a place (the machine's own zone differs from machine "
            "to machine): name an IANA zone such as Europe/Berlin",
        ),
        (
            profile_update(timezone="Europe/" + "x" * 300),
            "data.timezone",
            f"unknown timezone 'Europe/{'x' * 57}...' (expected an IANA name such as "
            "Europe/Moscow)",
        ),
        (
            profile_update(telegram_chat_id=True),
            "data.telegram_chat_id",
            "must be a string or an integer",
        ),
        (
            profile_update(telegram_chat_id=1.5),
            "data.telegram_chat_id",
            "must be a string or an integer",
        ),
        (profile_update(attributes=["vip"]), "data.attributes", "must be an object"),
        (profile_update(push_tokens="tok"), "data.push_tokens", "must be a list of strings"),
        (profile_update(push_tokens=["a", 1]), "data.push_tokens[1]", "must be a string"),
        # consent values
        (profile_update(consent=["email"]), "data.consent", "must be an object"),
        (profile_update(consent={"email": "yes"}), "data.consent.email", "must be true or false"),
        (profile_update(consent={"sms": 1}), "data.consent.sms", "must be true or false"),
        (profile_update(consent={"sms": None}), "data.consent.sms", "must be true or false"),
        # web push subscriptions
        (profile_update(webpush=SUB), "data.webpush", "must be a list of subscription objects"),
        (profile_update(webpush=["https://push.example/abc"]), "data.webpush[0]", SUBSCRIPTION),
        (profile_update(webpush=[{"keys": SUB["keys"]}]), "data.webpush[0]", SUBSCRIPTION),
        (
            profile_update(webpush=[{"endpoint": "https://p", "keys": {"p256dh": "BNc"}}]),
            "data.webpush[0]",
            SUBSCRIPTION,
        ),
        (
            profile_update(webpush=[{"endpoint": "https://p", "keys": ["BNc", "tBH"]}]),
            "data.webpush[0]",
            SUBSCRIPTION,
        ),
        (profile_update(webpush=[SUB, {"endpoint": 5}]), "data.webpush[1]", SUBSCRIPTION),
    ],
)
def test_invalid_event_names_its_field(obj: Any, field: str, message: str) -> None:
    assert error_of(obj) == (field, message)


def test_over_64_kib_names_the_size() -> None:
    obj = user_event(note="x" * MAX_EVENT_BYTES)
    size = len(json.dumps(obj, separators=(",", ":")).encode())
    assert error_of(obj, max_bytes=MAX_EVENT_BYTES) == (
        "(event)",
        f"is {size} bytes, over the limit of 65536",
    )


def test_the_size_limit_is_inclusive() -> None:
    obj = user_event(note="")
    base = len(json.dumps(obj, separators=(",", ":")).encode())
    exact = user_event(note="x" * (MAX_EVENT_BYTES - base))
    assert parse_event(exact, received_at=RECEIVED, max_bytes=MAX_EVENT_BYTES).data["note"]
    over = user_event(note="x" * (MAX_EVENT_BYTES - base + 1))
    assert error_of(over, max_bytes=MAX_EVENT_BYTES) == (
        "(event)",
        "is 65537 bytes, over the limit of 65536",
    )


def test_size_counts_utf8_bytes_not_escaped_characters() -> None:
    obj = user_event(note="ж" * 30_000)  # 30,000 characters: 60,000 bytes of UTF-8
    assert len(json.dumps(obj, ensure_ascii=False).encode()) < MAX_EVENT_BYTES
    event = parse_event(obj, received_at=RECEIVED, max_bytes=MAX_EVENT_BYTES)
    assert len(event.data["note"]) == 30_000


def test_size_of_a_large_non_ascii_event_is_reported_in_bytes() -> None:
    obj = user_event(note="ж" * 40_000)  # 80,000 bytes of UTF-8 at least
    field, message = error_of(obj, max_bytes=MAX_EVENT_BYTES)
    assert field == "(event)" and message.endswith("bytes, over the limit of 65536")


def test_size_is_checked_before_anything_else() -> None:
    field, _ = error_of({"payload": "x" * 70_000}, max_bytes=MAX_EVENT_BYTES)
    assert field == "(event)"


def test_a_valid_user_event() -> None:
    event = parse_event(
        {
            "id": "evt-9f1c",
            "type": "cart.updated",
            "user_id": "u42",
            "time": "2026-11-23T10:00:00Z",
            "data": {"items": [{"product_id": "p1", "qty": 2}], "total": 5980},
        },
        received_at=RECEIVED,
    )
    assert (event.id, event.type, event.user_id) == ("evt-9f1c", "cart.updated", "u42")
    assert event.time == parse_time("2026-11-23T10:00:00Z")
    assert event.data["total"] == 5980
    assert event.to_json()["time"] == "2026-11-23T10:00:00Z"


def test_time_defaults_to_received_at() -> None:
    event = parse_event({"type": "cart.cleared", "user_id": "u1"}, received_at=RECEIVED)
    assert event.time == RECEIVED
    assert event.data == {} and event.id is None


def test_time_with_an_offset_is_converted_to_utc() -> None:
    event = parse_event({**user_event(), "time": "2026-11-23T13:00:00+03:00"}, received_at=0)
    assert event.context["time"] == "2026-11-23T10:00:00Z"


def test_null_data_is_an_empty_object() -> None:
    assert parse_event({**user_event(), "data": None}, received_at=0).data == {}


def test_a_numeric_user_id_becomes_text() -> None:
    assert parse_event({**user_event(), "user_id": 42}, received_at=0).user_id == "42"


@pytest.mark.parametrize(
    "etype", ["license.issued", "points.redeemed", "shop.loyalty.tier_changed", "x", "a1_b.c_2"]
)
def test_custom_types_are_accepted_with_any_data(etype: str) -> None:
    event = parse_event(user_event(etype, anything=[1, {"x": None}]), received_at=0)
    assert event.type == etype and event.data["anything"] == [1, {"x": None}]


def test_a_product_event_has_no_user_and_an_integer_product_id_becomes_text() -> None:
    event = parse_event(
        {"type": "product.price_dropped", "data": {"product_id": 7, "new_price": 5}},
        received_at=0,
    )
    assert event.user_id is None and event.data["product_id"] == "7"


@pytest.mark.parametrize(
    "data", [{"message_id": "m1"}, {"rule": "abandoned_cart", "channel": "email"}]
)
def test_message_events_by_id_or_by_rule_and_channel(data: dict[str, Any]) -> None:
    assert parse_event(user_event("message.opened", **data), received_at=0).data == data


def test_a_full_profile_update_is_valid() -> None:
    data = {
        "email": "a@shop.test",
        "phone": "+79990001122",
        "whatsapp": "79990001122",
        "telegram_chat_id": 42,
        "push_tokens": ["fcm-1", "fcm-2"],
        "webpush": [SUB],
        "timezone": "Europe/Moscow",
        "locale": "ru",
        "consent": {"email": True, "sms": False},
        "attributes": {"first_name": "Ann"},
        "email_verified": True,
    }
    assert parse_event(profile_update(**data), received_at=0).data == data


def test_null_profile_fields_are_allowed() -> None:
    data = {"email": None, "phone": None, "timezone": None, "consent": None, "push_tokens": None}
    assert parse_event(profile_update(**data), received_at=0).data == data


def test_batch_reports_problems_by_index_and_keeps_order() -> None:
    batch: list[Any] = [
        {"type": "cart.cleared", "user_id": "a", "time": "2026-11-23T10:00:02Z"},
        {"type": "Cart", "user_id": "b"},
        "not an object",
        {"type": "cart.cleared", "user_id": "c", "time": "2026-11-23T10:00:01Z"},
        {"type": "cart.cleared"},
        {"type": "cart.cleared", "user_id": "d"},
    ]
    events, problems = parse_batch(batch, received_at=RECEIVED)
    assert [e.user_id for e in events] == ["a", "c", "d"]  # input order, not time order
    assert events[2].time == RECEIVED
    assert problems == [
        BatchProblem(1, "type", TYPE_PATTERN),
        BatchProblem(2, "(event)", "must be a JSON object"),
        BatchProblem(4, "user_id", "is required"),
    ]
    assert problems[0].to_json() == {"index": 1, "field": "type", "message": TYPE_PATTERN}


def test_batch_applies_the_64_kib_limit_by_default() -> None:
    big = user_event(note="x" * MAX_EVENT_BYTES)
    events, problems = parse_batch([user_event(), big], received_at=RECEIVED)
    assert len(events) == 1
    assert [(p.index, p.field) for p in problems] == [(1, "(event)")]
    assert "over the limit of 65536" in problems[0].message


def test_an_empty_batch() -> None:
    assert parse_batch([], received_at=RECEIVED) == ([], [])


# -- text a store can keep, and nesting (issue 9) -------------------------------------------


def deep_error(obj: Any) -> tuple[str, str]:
    with pytest.raises(EventError) as info:
        parse_event(obj, received_at=RECEIVED, deep=True)
    return info.value.field, info.value.message


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


SURROGATE = "holds a lone surrogate (\\ud800), which is not text"
NUL = "holds a NUL character (\\u0000)"


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        (
            user_event(items=[{"product_id": "p1", "name": "a\ud800"}]),
            "data.items[0].name",
            SURROGATE,
        ),
        (user_event(items=[{"product_id": "p1", "name": "a\x00b"}]), "data.items[0].name", NUL),
        (
            user_event(tags=["ok", "\udfff"]),
            "data.tags[1]",
            "holds a lone surrogate (\\udfff), which is not text",
        ),
        (user_event(attrs={"k\ud800": 1}), "data.attrs", f"has a key that {SURROGATE}"),
        (user_event(attrs={"k\x00": 1}), "data.attrs", f"has a key that {NUL}"),
        ({**user_event(), "x\ud800": 1}, "(event)", f"has a key that {SURROGATE}"),
        ({**user_event(), "time": "2026\ud800"}, "time", SURROGATE),
        ({**user_event(), "type": "a\x00"}, "type", NUL),
        (user_event(deep=nested(63)), "data.deep" + "[0]" * 62, "nests deeper than 64 levels"),
        # numbers the stdlib parser reads (NaN, Infinity, 1e999) and JSON has not
        (user_event(score=float("nan")), "data.score", NOT_FINITE),
        (user_event(scores=[1.5, float("inf")]), "data.scores[1]", NOT_FINITE),
        (user_event(a={"b": [{"c": float("-inf")}]}), "data.a.b[0].c", NOT_FINITE),
    ],
)
def test_the_deep_check_names_the_string_a_store_cannot_keep(
    obj: dict[str, Any], field: str, message: str
) -> None:
    assert deep_error(obj) == (field, message)


def test_64_levels_are_allowed() -> None:
    # the event (1), data (2), then 62 lists: 64 levels
    assert parse_event(user_event(deep=nested(62)), received_at=RECEIVED, deep=True)


def test_ids_are_checked_without_the_deep_check() -> None:
    assert error_of({**user_event(), "user_id": "u\x00"}) == ("user_id", NUL)
    assert error_of({**user_event(), "user_id": "u\ud800"}) == ("user_id", SURROGATE)
    assert error_of({**user_event(), "id": "e\x00"}) == ("id", NUL)
    too_long = "must be a non-empty string of at most 200 characters"
    assert error_of({**user_event(), "user_id": "u" * 201}) == ("user_id", too_long)
    assert error_of({**user_event(), "user_id": 10**201}) == ("user_id", too_long)
    assert parse_event({**user_event(), "user_id": "u" * 200}, received_at=RECEIVED)


def test_a_batch_checks_deep_by_default() -> None:
    bad = user_event(items=[{"product_id": "p1", "name": "\ud800"}])
    _, problems = parse_batch([user_event(), bad], received_at=RECEIVED)
    assert problems == [BatchProblem(1, "data.items[0].name", SURROGATE)]


def test_money_up_to_1e15_is_kept() -> None:
    event = parse_event(
        user_event("order.created", total=1e15, items=[{"price": -1e15}]), received_at=RECEIVED
    )
    assert event.data["total"] == 1e15
    assert parse_event(user_event(score=1e300), received_at=RECEIVED, deep=True)
