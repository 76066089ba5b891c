"""The built-in channel kinds' declarations (channels/kinds) and the table that holds them."""

from __future__ import annotations

from typing import Any

import pytest

from channels.kinds import CHANNELS, ChannelKind, LimitError, MarketingLinks, kind, kind_names
from channels.kinds.base import text
from channels.kinds.sms import segments
from channels.registry import register, register_kind

SUB = {"endpoint": "https://push.example/e1", "keys": {"p256dh": "k", "auth": "a"}}
PROFILE: dict[str, Any] = {
    "user_id": "u1",
    "email": "ann@shop.test",
    "phone": "+15550001111",
    "whatsapp": None,
    "telegram_chat_id": 42,
    "push_tokens": ["t1", "t2"],
    "webpush": [SUB],
}


def test_the_built_in_kinds_in_their_order() -> None:
    names = ("mobile_push", "webpush", "email", "sms", "telegram", "whatsapp", "webhook")
    assert kind_names() == names
    assert tuple(CHANNELS) == names and "email" in CHANNELS and "pigeon" not in CHANNELS


@pytest.mark.parametrize(
    ("channel", "profile", "found"),
    [
        ("email", PROFILE, ["ann@shop.test"]),
        ("email", {**PROFILE, "email": ""}, []),
        ("sms", PROFILE, ["+15550001111"]),
        ("whatsapp", PROFILE, ["+15550001111"]),  # no WhatsApp number: the phone
        ("whatsapp", {**PROFILE, "whatsapp": "79990001122"}, ["79990001122"]),
        ("telegram", PROFILE, [42]),
        ("mobile_push", PROFILE, ["t1", "t2"]),
        ("mobile_push", {"user_id": "u1"}, []),
        ("webpush", PROFILE, [SUB]),
        ("webhook", {"user_id": "u9"}, ["u9"]),  # every user, whatever the profile holds
    ],
)
def test_where_each_kind_finds_its_addresses(
    channel: str, profile: dict[str, Any], found: list[Any]
) -> None:
    assert kind(channel).addresses(profile) == found


def test_a_web_push_subscription_is_keyed_by_its_endpoint() -> None:
    assert kind("webpush").address_key(SUB) == "https://push.example/e1"
    assert kind("mobile_push").address_key("t1") == "t1"


def test_only_the_webhook_needs_no_consent() -> None:
    assert [k for k in kind_names() if not kind(k).needs_consent] == ["webhook"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a" * 160, (1, "GSM-7")),
        ("a" * 161, (2, "GSM-7")),
        ("a" * 306, (2, "GSM-7")),
        ("a" * 307, (3, "GSM-7")),
        ("€" * 80, (1, "GSM-7")),  # an extended character takes two septets
        ("€" * 81, (2, "GSM-7")),
        ("я" * 70, (1, "UCS-2")),
        ("я" * 71, (2, "UCS-2")),
        ("я" * 134, (2, "UCS-2")),
        ("я" * 135, (3, "UCS-2")),
        ("🙂" * 35, (1, "UCS-2")),  # outside the BMP: two UTF-16 units each
        ("🙂" * 36, (2, "UCS-2")),
    ],
)
def test_sms_segments(body: str, expected: tuple[int, str]) -> None:
    assert segments(body) == expected


def test_sms_limits_ten_segments_and_adds_the_count() -> None:
    sms = kind("sms")
    payload: dict[str, Any] = {"text": "a" * 1530}
    sms.check_payload(payload)
    assert (payload["segments"], payload["encoding"]) == (10, "GSM-7")
    with pytest.raises(LimitError, match=r"^sms.text is 11 GSM-7 segments, over 10$"):
        sms.check_payload({"text": "a" * 1531})
    with pytest.raises(LimitError, match=r"^sms.text rendered empty$"):
        sms.check_payload({"text": ""})
    assert sms.check_constant("text", "я" * 671) == "is 11 UCS-2 segments, over 10"
    assert sms.check_constant("text", "я" * 670) is None


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (4096, True), (4097, False)])
def test_telegram_text_is_1_to_4096_characters(length: int, ok: bool) -> None:
    payload = {"text": "x" * length}
    if ok:
        kind("telegram").check_payload(payload)
    else:
        message = f"^telegram.text must be 1-4096 characters, rendered {length}$"
        with pytest.raises(LimitError, match=message):
            kind("telegram").check_payload(payload)


@pytest.mark.parametrize("channel", ["mobile_push", "webpush"])
def test_a_push_payload_is_at_most_4096_bytes(channel: str) -> None:
    room = 4096 - len(str({"body": ""}).encode())
    kind(channel).check_payload({"body": "x" * room})
    with pytest.raises(LimitError, match=f"^{channel} payload is 4097 bytes, over 4096$"):
        kind(channel).check_payload({"body": "x" * (room + 1)})


LINKS = MarketingLinks(
    open_url="https://k.example/t/o/T", unsubscribe_url="https://k.example/t/u/U"
)
PIXEL = '<img src="https://k.example/t/o/T" width="1" height="1" alt="" style="display:none">'


def test_marketing_mail_gets_the_pixel_before_the_body_ends_and_list_unsubscribe() -> None:
    payload: dict[str, Any] = {"subject": "Hi", "html": "<html><BODY>Hi</BODY></html>"}
    headers = kind("email").marketing(payload, LINKS)
    assert headers == {"List-Unsubscribe": "https://k.example/t/u/U"}
    assert payload["html"] == f"<html><BODY>Hi{PIXEL}</BODY></html>"
    bare: dict[str, Any] = {"subject": "Hi", "html": "<p>Hi</p>", "text": "Hi"}
    kind("email").marketing(bare, LINKS)
    assert (bare["html"], bare["text"]) == (f"<p>Hi</p>{PIXEL}", "Hi")
    plain: dict[str, Any] = {"subject": "Hi", "text": "Hi"}
    assert kind("email").marketing(plain, LINKS) == headers and "html" not in plain


def test_other_kinds_add_nothing_to_marketing_messages() -> None:
    for name in kind_names():
        if name != "email":
            payload = {"text": "Hi"}
            assert kind(name).marketing(payload, LINKS) == {} and payload == {"text": "Hi"}


class _Owl(ChannelKind):
    name = "owl"
    fields = {"scroll": text(required=True)}


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"name": "email"}, "channel kind 'email' is registered twice"),
        ({"name": "template"}, "channel kind name 'template' must be a word other than"),
        ({"name": "owl post"}, "channel kind name 'owl post' must be a word"),
        ({"fields": {}}, "channel kind 'owl' declares no template fields"),
        ({"needs_any": ("letter",)}, "channel kind 'owl': needs_any names no field: letter"),
        ({"text_chars": {"letter": (1, 9)}}, "'owl': text_chars names no field: letter"),
    ],
)
def test_the_table_refuses_a_taken_name_and_a_declaration_that_contradicts_itself(
    declared: dict[str, Any], message: str
) -> None:
    owl = type("Owl", (_Owl,), declared)()
    with pytest.raises(ValueError, match=message):
        register_kind(owl)
    assert "owl" not in kind_names()


def test_the_table_refuses_a_provider_twice_and_names_the_known_kinds() -> None:
    with pytest.raises(ValueError, match="channel provider 'sandbox' is registered twice"):
        register("sandbox", lambda *args: pytest.fail("never built"))
    with pytest.raises(ValueError, match=r"^unknown channel 'owl'; known: mobile_push, webpush, "):
        kind("owl")
