"""Durations (`90s`, `1d12h`, `-7d`): parsing, formatting, round trips and errors."""

from __future__ import annotations

import pytest

from engine.lang.durations import format_duration, parse_duration

MINUTE, HOUR, DAY, WEEK = 60, 3600, 86400, 7 * 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("90s", 90),
        ("15m", 15 * MINUTE),
        ("1h", HOUR),
        ("3d", 3 * DAY),
        ("2w", 2 * WEEK),
        ("1d12h", DAY + 12 * HOUR),
        ("1w2d3h4m5s", WEEK + 2 * DAY + 3 * HOUR + 4 * MINUTE + 5),
        ("1h30m", HOUR + 30 * MINUTE),
        ("-7d", -7 * DAY),
        ("-1d12h", -(DAY + 12 * HOUR)),  # the sign covers the whole duration
        (" 1d 12h ", DAY + 12 * HOUR),  # spaces are tolerated
        ("1h1h", 2 * HOUR),  # repeated units add up
        ("90m", 90 * MINUTE),  # no carry-over required
    ],
)
def test_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == float(seconds)


@pytest.mark.parametrize(("number", "seconds"), [(0, 0.0), (90, 90.0), (1.5, 1.5), (-60, -60.0)])
def test_a_bare_number_is_seconds(number: float, seconds: float) -> None:
    assert parse_duration(number) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (90, "1m30s"),
        (HOUR, "1h"),
        (3661, "1h1m1s"),
        (DAY + 12 * HOUR, "1d12h"),
        (WEEK, "1w"),
        (8 * DAY, "1w1d"),
        (-7 * DAY, "-1w"),
        (-MINUTE, "-1m"),
        (59.9, "59s"),  # whole seconds only
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "text", ["1s", "45m", "1d12h", "1w6d23h59m59s", "-7d", "-1d12h", "2w", "400d", "0s"]
)
def test_format_is_the_inverse_of_parse(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 61, 3599, 3600, 86399, 86400, 10**7, -3601])
def test_parse_is_the_inverse_of_format(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "-", "+1h", "1H", "1.5h", "1x", "abc", "1 x", "1d-2h", "d1", "--1h", "1hh"]
)
def test_invalid_text_names_the_value_and_the_units(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == (
        f"invalid duration '{text}': expected a number with a unit (s m h d w), e.g. 15m, 1h, 1d12h"
    )


def test_a_boolean_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="got a boolean"):
        parse_duration(True)


@pytest.mark.parametrize("value", [None, [1]])
def test_a_non_text_value_is_a_value_error(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("9" * 400 + "d", "9" * 20 + "..."),
        ("99999999d", "99999999d"),
        ("3651d", "3651d"),
        ("-3651d", "-3651d"),
        ("522w", "522w"),
        (1e300, "1e+300"),
        (float("inf"), "inf"),
        (-float("inf"), "-inf"),
        (10**400, "1" + "0" * 19 + "..."),
    ],
)
def test_a_duration_over_ten_years_is_refused_naming_itself(value: object, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"duration '{shown}' is over the limit of 10 years (3650d)"


def test_ten_years_is_the_longest_duration() -> None:
    assert parse_duration("3650d") == parse_duration("-3650d") * -1 == 3650 * DAY
    assert parse_duration(3650 * DAY) == 3650 * DAY


def test_nan_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="got nan"):
        parse_duration(float("nan"))


def test_a_window_back_in_time_may_be_longer() -> None:
    """`since=-99999999w` (stats, dashboard) is all time: uncapped, only past a float fails."""
    assert parse_duration("99999999d", capped=False) == 99999999 * DAY
    with pytest.raises(OverflowError, match=r"^duration '9{20}\.\.\.' is too long to count"):
        parse_duration("9" * 400 + "d", capped=False)
