"""`kaskad simulate` at the edges of time (the years 1 and 9999) and on stdin."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.cli import main
from engine.runtime.logs import configure
from tests.helpers import QUIET_CONFIG, RULES, ev, profile

CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}
Result = tuple[int, str, str]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure(level="warning", fmt="console")


@pytest.fixture
def simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    config = tmp_path / "quiet.yaml"
    config.write_text(QUIET_CONFIG, encoding="utf-8")

    def run(events: str, *extra: str) -> Result:
        capsys.readouterr()
        args = ["--events", events, "--rules", str(RULES), "--config", str(config)]
        code = main(["simulate", *args, "--format", "json", *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def cart_at(day: str) -> list[str]:
    return [
        json.dumps(profile("u1", f"{day}T09:00:00Z", email="u1@shop.test")),
        json.dumps(ev("cart.updated", "u1", f"{day}T10:00:00Z", CART)),
    ]


def sends(out: str) -> list[tuple[str, str, str]]:
    records = [json.loads(line) for line in out.splitlines()]
    return [(r["time"], r["rule"], r["template"]) for r in records if r["status"] == "sent"]


def write(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_the_year_9999_runs_up_to_the_last_day_simulate_can_hold(
    tmp_path: Path, simulate: Callable[..., Result]
) -> None:
    """The chain's first steps run; the horizon (400 days after the last event) stops at
    9999-12-30 instead of overflowing; an event after it is a warning naming its line."""
    late = json.dumps(ev("cart.updated", "u2", "9999-12-31T20:00:00Z", CART))
    code, out, err = simulate(write(tmp_path, [*cart_at("9999-12-20"), late]))
    assert code == 0
    assert err.splitlines() == [
        f"warning: {tmp_path / 'events.jsonl'}:3: time: 9999-12-31T20:00:00Z is outside the "
        "times simulate runs (0001-01-02T00:00:00Z to 9999-12-30T00:00:00Z) (event skipped)"
    ]
    assert ("9999-12-20T11:00:00Z", "abandoned_cart", "cart_reminder") in sends(out)
    assert all(t < "9999-12-30" for t, _, _ in sends(out))


def test_the_year_1_runs_from_its_first_event(
    tmp_path: Path, simulate: Callable[..., Result]
) -> None:
    """The virtual clock starts at the first event even before 1970, so timers fire at
    their time in the year 1; the first day of the year 1 is a warning."""
    early = json.dumps(ev("cart.updated", "u2", "0001-01-01T10:00:00Z", CART))
    code, out, err = simulate(write(tmp_path, [early, *cart_at("0001-01-02")]))
    assert code == 0
    assert err.splitlines() == [
        f"warning: {tmp_path / 'events.jsonl'}:1: time: 0001-01-01T10:00:00Z is outside the "
        "times simulate runs (0001-01-02T00:00:00Z to 9999-12-30T00:00:00Z) (event skipped)"
    ]
    assert ("0001-01-02T11:00:00Z", "abandoned_cart", "cart_reminder") in sends(out)
    assert all(t.startswith("0001-") for t, _, _ in sends(out))


def test_events_from_stdin(
    tmp_path: Path, simulate: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = cart_at("2026-11-23")
    _, from_file, _ = simulate(write(tmp_path, lines))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    code, out, err = simulate("-")
    assert (code, err) == (0, "")
    assert out == from_file and sends(out)
