"""`kaskad stats` on a store an in-process daemon filled: the states a store is in right
after an event, rules that are unknown or only in the store."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main as cli_main
from engine.runtime.logs import configure

from .helpers import Client

CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure(level="warning", fmt="console")


def event(etype: str, user: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": etype, "user_id": user, "data": data or {}}


async def post(client: Client, *events: dict[str, Any]) -> None:
    status, body = await client.post_events(list(events))
    assert status == 202, body
    await client.daemon.pump()


def cli_config(tmp_path: Path, rules: Path) -> Path:
    config = tmp_path / "cli.yaml"
    config.write_text(
        f'storage: {{url: "sqlite:///{tmp_path}/kaskad.db"}}\nrules: {{path: "{rules}"}}\n',
        encoding="utf-8",
    )
    return config


async def kaskad(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_stats_text_right_after_a_cart_event(
    client: Client, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Chains started, nothing sent yet: rules with instances and no message at all.
    await post(client, event("profile.updated", "u1", {"email": "u1@x.test"}))
    await post(client, event("cart.updated", "u1", CART))
    config = cli_config(tmp_path, rules_dir)
    code, out, err = await kaskad(capsys, "stats", "--config", str(config))
    assert (code, err) == (0, "")
    block = out.split("\nabandoned_cart: ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[0].endswith("  [active]")
    assert block[1] == (
        "  instances: started 1, active 1, converted 0, exited 0, completed 0, expired 0, "
        "restarted 0, stopped 0, error 0"
    )
    funnel = ["SENDS", "SKIPPED", "DELIVERED", "OPENED", "CLICKED", "CONVERTED", "REVENUE", "SKIPS"]
    assert block[2].split() == ["STEP", "NAME", "CHANNEL", "VARIANT", *funnel]
    assert block[3].split() == ["all", "0", "0", "0", "0", "0", "0", "0.00", "-"]
    assert block[4].split() == ["CHANNEL", *funnel]  # no channel rows: the crash was here


async def test_stats_of_an_unknown_rule_is_an_error_with_a_suggestion(
    client: Client, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await post(client, event("profile.updated", "u1", {"email": "u1@x.test"}))
    await post(client, event("cart.updated", "u1", CART))
    # The CLI reads rules where abandoned_cart_quick is gone: only the store knows it.
    cli_rules = tmp_path / "cli_rules"
    shutil.copytree(rules_dir, cli_rules)
    (cli_rules / "abandoned_cart_quick.yaml").unlink()
    config = cli_config(tmp_path, cli_rules)
    code, out, err = await kaskad(
        capsys, "stats", "--config", str(config), "--rule", "abandoned_kart"
    )
    assert (code, out) == (1, "")
    assert err == "unknown rule 'abandoned_kart' (did you mean 'abandoned_cart'?)\n"
    argv = ["stats", "--config", str(config), "--rule", "abandoned_cart_quik"]
    code, out, err = await kaskad(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == "unknown rule 'abandoned_cart_quik' (did you mean 'abandoned_cart_quick'?)\n"
    code, out, err = await kaskad(capsys, *argv[:-1], "abandoned_cart_quick")
    assert (code, err) == (0, "")
    assert "\nabandoned_cart_quick  [deleted]\n" in out
    code, out, err = await kaskad(capsys, *argv[:-1], "zzz", "--format", "json")
    assert (code, out, err) == (1, "", "unknown rule 'zzz'\n")
