"""The fast ISO formatter gives exactly the text of the datetime path."""

from __future__ import annotations

import random

import pytest

from engine.clock import _iso_datetime, iso


@pytest.mark.parametrize(
    "ts",
    [
        0.0,
        1e-7,
        59.9999995,  # rounds up into the next minute
        86399.9999996,  # ... and the next day
        1_000_000_000.0000005,  # half a microsecond: half to even
        1_000_000_000.0000015,
        1_700_000_000.0004,  # under a millisecond: ".000"
        1_700_000_000.9995,
        1_709_164_800.0,  # 2024-02-29
        253402300799.999,  # the last millisecond of 9999
        -1.5,
    ],
)
def test_edges(ts: float) -> None:
    assert iso(ts) == _iso_datetime(ts)


def test_random_times_match_datetime() -> None:
    rng = random.Random(7)
    stamps = [rng.uniform(0, 4e9) for _ in range(20_000)]
    stamps += [rng.randrange(4 * 10**9) + rng.randrange(1000) / 1000 for _ in range(20_000)]
    stamps += [1.7e9 + n * 0.25 for n in range(20_000)]  # a stream: the cache's case
    assert [iso(t) for t in stamps] == [_iso_datetime(t) for t in stamps]


def test_format() -> None:
    assert iso(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert iso(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (1e300, "9999-12-31T23:59:59Z"),
        (float("inf"), "9999-12-31T23:59:59Z"),
        (float("nan"), "9999-12-31T23:59:59Z"),
        (8.64e12, "9999-12-31T23:59:59Z"),  # a timer set 99999999 days on
        (-1e20, "0001-01-01T00:00:00Z"),
        (-float("inf"), "0001-01-01T00:00:00Z"),
    ],
)
def test_a_time_past_the_calendar_shows_as_its_last_second(ts: float, text: str) -> None:
    """A due time no datetime holds (it never comes) is shown, never an OverflowError."""
    assert iso(ts) == text
