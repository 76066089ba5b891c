"""simulate is what the daemon does: every seed scenario of tests/test_seeds.py runs through
`simulate` and through the real daemon's own loop (HTTP ingest, the inbox, the processor,
the dispatcher with the sandbox channels, the store) on a virtual clock, and the two give
byte-identical send/skip lines."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import test_seeds

from engine.clock import VirtualClock, iso, parse_time
from engine.daemon import Daemon
from engine.lang.config import Config, RulesConfig, ServerConfig, StorageConfig, parse_config
from engine.lang.ruleset import RuleSet
from engine.simulate import MAX_HORIZON_S
from tests.helpers import QUIET_CONFIG, run_simulation

SEED_TESTS = sorted(name for name in dir(test_seeds) if name.startswith("test_"))
_SENT = frozenset({"sent", "delivered", "opened", "clicked"})


def _lines(records: list[dict[str, Any]]) -> list[str]:
    """The send/skip lines, in one canonical order."""
    return sorted(
        json.dumps(r, ensure_ascii=False) for r in records if r["status"] in ("sent", "skipped")
    )


def _rules_dir(ruleset: RuleSet, into: Path) -> Path:
    """The scenario's rules (the shipped files it narrowed to) and every shipped template."""
    into.mkdir(parents=True)
    for rule in ruleset.rules.values():
        shutil.copy(rule.path, into / Path(rule.path).name)
    shutil.copytree(Path(test_seeds.__file__).parent.parent / "rules" / "templates", into / "t")
    return into


async def run_daemon(
    tmp: Path,
    ruleset: RuleSet,
    events: list[dict[str, Any]],
    config: Config | str,
    until: float | None,
) -> list[dict[str, Any]]:
    """The scenario through the daemon: events posted at their times, timers and
    broadcasts fired as the virtual clock reaches them; the timeline from the store."""
    base = parse_config(config) if isinstance(config, str) else config
    cfg = base.model_copy(
        update={
            "server": ServerConfig(host="127.0.0.1", port=0),
            # The timeline is read from the store after running up to 400 days past the last
            # event: keep every message (the retention job would delete the oldest).
            "storage": StorageConfig(url=f"sqlite:///{tmp}/kaskad.db", message_retention="3650d"),
            "rules": RulesConfig(path=str(_rules_dir(ruleset, tmp / "rules")), watch=False),
        }
    )
    ordered = sorted(events, key=lambda e: parse_time(e["time"]))
    clock = VirtualClock(parse_time(ordered[0]["time"]))
    horizon = until if until is not None else parse_time(ordered[-1]["time"]) + MAX_HORIZON_S
    daemon = Daemon(cfg, clock, background=False)
    await daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.port}/v1/events"

        async def settle_until(limit: float, inclusive: bool) -> None:
            while (due := await daemon.processor.next_due()) is not None and (
                due < limit or (inclusive and due == limit)
            ):
                clock.advance_to(due)
                await daemon.pump()

        async with aiohttp.ClientSession() as http:
            i = 0
            while i < len(ordered):
                at = parse_time(ordered[i]["time"])
                if at > horizon:
                    break
                group = []
                while i < len(ordered) and parse_time(ordered[i]["time"]) == at:
                    group.append(ordered[i])
                    i += 1
                # Events at the same instant as a timer go first (SPEC 4).
                await settle_until(at, inclusive=False)
                clock.advance_to(at)
                async with http.post(url, json=group) as resp:
                    assert resp.status == 202, await resp.text()
                await daemon.pump()
            await settle_until(horizon, inclusive=True)
        messages = await daemon.store.messages(limit=100_000)
    finally:
        await daemon.stop()
    records = []
    for m in messages:
        if m.status not in _SENT and m.status != "skipped":
            continue
        sent = m.status in _SENT
        when = m.sent_at if sent and m.sent_at is not None else m.created_at
        records.append(
            {
                "time": iso(when),
                "rule": m.rule_id,
                "user_id": m.user_id,
                "step": m.step,
                "channel": m.channel,
                "template": m.template,
                "variant": m.variant,
                "status": "sent" if sent else "skipped",
                "reason": m.reason,
            }
        )
    return records


@pytest.mark.parametrize("name", SEED_TESTS)
def test_a_seed_scenario_gives_the_same_timeline_in_the_daemon(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[int] = []

    def both(
        ruleset: RuleSet,
        events: list[dict[str, Any]],
        config: Config | str = QUIET_CONFIG,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        records = run_simulation(ruleset, events, config, until)
        tmp = tmp_path / f"run{len(compared)}"
        daemon = asyncio.run(run_daemon(tmp, ruleset, events, config, until))
        assert "\n".join(_lines(daemon)) == "\n".join(_lines(records))
        compared.append(len(records))
        return records

    monkeypatch.setattr(test_seeds, "run_simulation", both)
    scenario: Callable[[], None] = getattr(test_seeds, name)
    scenario()  # the seed test's own assertions hold on the timeline as well
    assert compared, f"{name} ran no scenario"
