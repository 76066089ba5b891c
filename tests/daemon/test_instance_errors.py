"""A chain stopped by bad data is visible (SPEC 10: a bad event never stops the daemon, and
what it stopped is shown): the instance ends as `error` in the timeline, one JSON log line
names rule, user, event, step and the offending value, a metric counts it, /v1/stats and the
dashboard show it, and `kaskad simulate` prints it. A broadcast whose audience fails on most
users logs that once per rule and run, with the count, while the metric counts every user.

An in-process daemon on a virtual clock, its structlog JSON lines read off stderr.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.cli import main
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.runtime.logs import configure

from .helpers import START, Client, make_config

NOTE = """\
template: note
email: {subject: Hello, text: "Hello {{ user.user_id }}"}
"""
EXPIRY = """\
rule: expiry
trigger: {event: points.accrued}
steps:
  - wait: {until: "{{ trigger.data.expires_at }}"}
  - send: {template: note, cascade: [email]}
"""
# Most users have no attributes.visits: the audience cannot be evaluated for them.
REGULARS = """\
rule: regulars
trigger: {schedule: "0 12 * * *", timezone: UTC}
audience: user.attributes.visits > 3
steps:
  - send: {template: note, cascade: [email]}
"""
BAD_TIME = "01.04.2027"
POINTS = {
    "id": "pts-1",
    "type": "points.accrued",
    "user_id": "ann",
    "time": "2026-11-23T10:00:00Z",
    "data": {"amount": 50, "expires_at": BAD_TIME},
}
ANN = {
    "type": "profile.updated",
    "user_id": "ann",
    "time": "2026-11-23T09:00:00Z",
    "data": {"email": "ann@shop.test"},
}


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules"
    path.mkdir()
    (path / "note.yaml").write_text(NOTE)
    (path / "expiry.yaml").write_text(EXPIRY)
    (path / "regulars.yaml").write_text(REGULARS)
    return path


@pytest.fixture
def json_logs() -> Iterator[None]:
    """The daemon's log lines as it writes them in production: JSON, at info."""
    configure(level="info", fmt="json")
    yield
    configure(level="warning", fmt="console")


@pytest.fixture
async def client(tmp_path: Path, rules: Path, json_logs: None) -> AsyncIterator[Client]:
    daemon = Daemon(make_config(tmp_path, rules), VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


def log_lines(err: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def metric(text: str, name: str, **labels: str) -> float | None:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def visible(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


async def test_a_wait_until_that_is_not_a_time_stops_the_chain_visibly(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (await client.post_events([ANN, POINTS]))[0] == 202
    await client.advance(0)
    err = capsys.readouterr().err

    # The timeline names the instance, its status and why.
    status, body = await client.admin("GET", "/v1/users/ann/timeline")
    assert status == 200, body
    (instance,) = body["instances"]
    assert instance["rule"] == "expiry" and instance["status"] == "error"
    assert BAD_TIME in instance["end_reason"] and "step 0" in instance["end_reason"]
    ended = [i for i in body["timeline"] if i["kind"] == "instance.error"]
    assert [(i["rule"], i["reason"]) for i in ended] == [("expiry", instance["end_reason"])]

    # One log line: rule, user, event id, step and the offending value.
    (line,) = log_lines(err, "instance.error")
    assert line["rule"] == "expiry" and line["reason"] == "invalid_time"
    assert line["user"] == "ann" and line["event_id"] == "pts-1"
    assert line["where"] == "step 0" and BAD_TIME in line["error"]
    assert line["count"] == 1

    status, text = await client.admin("GET", "/metrics")
    assert status == 200
    assert metric(text, "kaskad_instance_errors_total", reason="invalid_time", rule="expiry") == 1

    status, stats = await client.admin("GET", "/v1/stats?rule=expiry")
    assert status == 200, stats
    (row,) = [r for r in stats["rules"] if r["rule"] == "expiry"]
    assert row["instances"]["error"] == 1, row["instances"]

    status, html = await client.admin("GET", "/")
    assert status == 200
    found = re.search(r'<tr id="rule-expiry">(.*?)</tr>', html, re.S)
    assert found and "1 stopped by bad data" in visible(found.group(1)), html
    status, html = await client.admin("GET", "/ui/rules/expiry")
    assert status == 200
    table = re.search(r'<table class="instances">(.*?)</table>', html, re.S)
    assert table and "error 1" in visible(table.group(1)), html


def test_simulate_prints_the_stopped_chain(
    tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(ANN) + "\n" + json.dumps(POINTS) + "\n")
    capsys.readouterr()
    try:
        code = main(
            ["simulate", "--events", str(events), "--rules", str(rules), "--format", "json"]
        )
    finally:
        configure(level="warning", fmt="console")  # main pointed structlog at capsys
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    errors = [line for line in lines if line["rule"] == "expiry"]
    assert errors == [
        {
            "time": "2026-11-23T10:00:00Z",
            "rule": "expiry",
            "user_id": "ann",
            "step": "0",
            "channel": None,
            "template": None,
            "variant": None,
            "status": "error",
            "reason": "invalid_time",
        }
    ]


async def test_a_broadcast_audience_failing_on_most_users_is_logged_once_per_run(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    # More users than a broadcast takes in one unit of work (500): the run spans 3 units.
    lacking = [f"u{n:04}" for n in range(1001)]
    profiles = [{"type": "profile.updated", "user_id": u, "data": {}} for u in lacking]
    profiles.append(
        {"type": "profile.updated", "user_id": "reg", "data": {"attributes": {"visits": 7}}}
    )
    for start in range(0, len(profiles), 50):  # the test config's max_batch_events
        assert (await client.post_events(profiles[start : start + 50]))[0] == 202
    await client.advance(0)
    capsys.readouterr()
    await client.advance(2 * 3600)  # 12:00 UTC: the broadcast runs
    err = capsys.readouterr().err

    (line,) = log_lines(err, "rule.expression_failed")
    assert line["rule"] == "regulars" and line["where"] == "audience"
    assert line["count"] == len(lacking)
    assert "visits" in line["error"]
    assert log_lines(err, "instance.error") == []
    (done,) = log_lines(err, "broadcast.done")
    assert done["rule"] == "regulars" and done["started"] == 1

    status, text = await client.admin("GET", "/metrics")
    assert status == 200
    assert metric(
        text, "kaskad_expression_errors_total", reason="expression_error", rule="regulars"
    ) == len(lacking)
    _, body = await client.admin("GET", "/v1/users/reg/timeline")
    assert [i["rule"] for i in body["instances"]] == ["regulars"]

    # The next run logs its own line.
    await client.advance(24 * 3600)
    (again,) = log_lines(capsys.readouterr().err, "rule.expression_failed")
    assert again["count"] == len(lacking)
