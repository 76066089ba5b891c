"""A message's page, in parts: our tracking links found in the content as sent and decoded
(signed by the current secret or an older one), the rendered view that neither opens nor
clicks, and the history of a message stored before histories were kept (its own times)."""

from __future__ import annotations

from engine.api.message_view import BLANK_IMAGE, content_fields, tracked_links, with_destinations
from engine.core.model import Message
from engine.core.tracking import Tracker
from engine.store.history import implied_events

T0 = 1_795_000_000.0
NOW = Tracker("https://t.example", "current-secret")
OLD = Tracker("https://old.example/base", "old-secret")


def mail(html: str, text: str = "") -> Message:
    return Message(
        "m1", "i1", "r1", "u1", "1", "email", "t", None, "marketing", "sent", T0,
        payload={"subject": "Hi", "html": html, "text": text, "_headers": {"X": "y"}},
    )  # fmt: skip


def test_links_are_decoded_whoever_signed_them_and_only_ours_count() -> None:
    click = NOW.click_url("m1", "https://shop.example/a?b=1&c=2")
    old_click = OLD.click_url("m1", "https://shop.example/old")
    pixel = NOW.open_url("m1")
    html = (
        f'<a href="{click}">a</a> <a href="{old_click}">b</a> <img src="{pixel}">'
        '<a href="https://t.example/t/c/not.a-token">c</a> <a href="https://x.example/t/c/">d</a>'
    )
    links = tracked_links(mail(html, f"again: {click}").payload, NOW)
    assert [(x.kind, x.destination, x.verified, x.field) for x in links] == [
        ("click", "https://shop.example/a?b=1&c=2", True, "html"),
        ("click", "https://shop.example/old", False, "html"),
        ("open", None, True, "html"),
    ]
    shown = with_destinations(html, links)
    assert click not in shown and old_click not in shown and pixel not in shown
    assert 'href="https://shop.example/a?b=1&c=2"' in shown and f'src="{BLANK_IMAGE}"' in shown
    fields = content_fields(mail(html, "plain"), links)
    assert [(f["key"], f["html"]) for f in fields] == [
        ("subject", False),
        ("html", True),
        ("text", False),
    ]
    assert fields[1]["text"] == html and fields[1]["rendered"] == shown  # as sent, as shown


def test_a_message_without_kept_history_shows_its_own_times() -> None:
    m = mail("<p>x</p>")
    m.sent_at, m.provider_id, m.delivered_at, m.opened_at = T0 + 1, "p1", T0 + 5, T0 + 9
    assert implied_events(m) == [
        (T0, "queued", None),
        (T0 + 1, "sent", "provider id p1"),
        (T0 + 5, "delivered", None),
        (T0 + 9, "opened", None),
    ]
    skipped = Message(
        "m2", "i1", "r1", "u1", "1", "sms", None, None, "marketing", "skipped", T0,
        reason="no_consent",
    )  # fmt: skip
    assert implied_events(skipped) == [(T0, "skipped", "no_consent")]
    failed = Message(
        "m3", "i1", "r1", "u1", "1", "sms", None, None, "marketing", "failed", T0,
        reason="retries_exhausted", detail="HTTP 503",
    )  # fmt: skip
    assert implied_events(failed) == [
        (T0, "queued", None),
        (T0, "failed", "retries_exhausted: HTTP 503"),
    ]
