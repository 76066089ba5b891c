"""Logs hold no personal data (SPEC 9): addresses are masked in every field, the rendered
traceback of an exception too, while dates, times, durations and ids stay readable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from engine.runtime.logs import configure, mask

EMAIL = "ann.smith@example.com"
PHONES = ["+15550001234", "+7 999 000-11-22", "79990001122", "+1 (555) 000-1234"]
KEPT = [
    "2026-11-23",
    "2026-11-23T10:00:00Z",
    "2026-11-23 10:00:00",
    "2026-11-23T10:00:00+03:00",
    "3600",
    "86400s",
    "retry_in_s=1.5",
    "1795000000",  # unix seconds
    "1795000000.25",
    "m-0195f3a2b4c12345678901",
    "m-000000001",
    "550e8400-e29b-41d4-a716-446655440000",
    "127.0.0.1:8080",
]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """The daemon's logging set-up (JSON lines); yields a reader of the lines written."""
    configure("info", "json")

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    yield lines
    configure(level="warning", fmt="console")  # as tests/conftest.py leaves it


def failure() -> ValueError:
    return ValueError(f"no route for {EMAIL} / {PHONES[0]} / {PHONES[2]} at 2026-11-23T10:00:00Z")


def test_an_exception_message_is_masked_in_the_rendered_traceback(json_logs: Any) -> None:
    log = structlog.get_logger("kaskad.test")
    try:
        raise failure()
    except ValueError:
        log.exception("send.failed", user="u1")
    log.error("send.failed_later", exc_info=failure())  # an exception object, not the current
    first, second = json_logs()
    assert first["exception"].startswith("Traceback (most recent call last):")
    for line in (first, second):
        text = line["exception"]
        assert "ValueError: no route for" in text
        assert EMAIL not in text and "a***@example.com" in text
        assert "5550001234" not in text and "79990001122" not in text
        assert "***34" in text and "***22" in text
        assert "2026-11-23T10:00:00Z" in text  # the date in the message is intact


def test_every_field_is_masked_and_dates_and_ids_survive(json_logs: Any) -> None:
    log = structlog.get_logger("kaskad.test")
    log.warning(
        "message.odd",
        detail=f"provider said: {PHONES[1]} invalid, {EMAIL} bounced",
        error=repr(ValueError(PHONES[2])),
        kept=" ".join(KEPT),
        sent_at="2026-11-23T10:00:00Z",
        to=PHONES[0],
    )
    (line,) = json_logs()
    assert line["detail"] == "provider said: ***22 invalid, a***@example.com bounced"
    assert line["error"] == "ValueError('***22')"
    assert line["kept"] == " ".join(KEPT)
    assert line["sent_at"] == "2026-11-23T10:00:00Z"
    assert line["to"] == "***34"
    assert line["timestamp"].endswith("Z")


@pytest.mark.parametrize("phone", [*PHONES, "+44 20 7946 0958", "tel:+49-30-1234567"])
def test_phones_are_masked(phone: str) -> None:
    masked = mask(f"call {phone}, please")
    assert masked.startswith("call ") and masked.endswith("***" + phone[-2:] + ", please")


@pytest.mark.parametrize("text", KEPT)
def test_dates_durations_and_ids_are_not_phones(text: str) -> None:
    assert mask(text) == text
