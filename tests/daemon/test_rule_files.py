"""Rule files that changed under a running daemon: a YAML bomb, a deleted template.

In process on a virtual clock (reload through POST /v1/rules/reload, as the file watcher
does), and as a real process started with a bomb in its rules directory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon

from .helpers import START, Client, make_config
from .proc import Daemons, free_port, http_json, http_session, write_config

# a description that, expanded, is 9**9 strings: a billion laughs in 474 bytes
BOMB = """\
description:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  - &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
ANCHOR_ERROR = "YAML anchors (&a) are not allowed: write the value out where it is used"
RULE = """\
rule: r
category: transactional
trigger: {event: order.created}
steps:
  - wait: 1h
  - send: {template: TEMPLATE, cascade: [sms]}
"""
T0 = "2026-11-23T10:00:00Z"


def template(name: str, text: str) -> str:
    return f"template: {name}\nsms: {{text: {text}}}\n"


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Client]:
    """A daemon on a rules directory of one rule `r` using template `old`."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULE.replace("TEMPLATE", "old"))
    (rules / "old.yaml").write_text(template("old", "Old text"))
    config = make_config(tmp_path, rules)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


async def order(client: Client, user: str) -> None:
    status, _ = await client.post_events(
        [
            {
                "type": "profile.updated",
                "user_id": user,
                "time": T0,
                "data": {"phone": "+15550001111"},
            },
            {"type": "order.created", "user_id": user, "time": T0, "data": {"total": 10}},
        ]
    )
    assert status == 202
    await client.advance(0)


async def test_a_bomb_written_over_a_rule_is_refused_and_the_previous_version_runs(
    small: Client, tmp_path: Path
) -> None:
    path = tmp_path / "rules" / "r.yaml"
    path.write_text(RULE.replace("TEMPLATE", "old") + BOMB)
    start = time.process_time()
    _, body = await small.admin("POST", "/v1/rules/reload")
    assert time.process_time() - start < 1.0
    rule = {r["id"]: r for r in body["rules"]}["r"]
    assert rule["state"] == "stale"
    assert rule["errors"] == [f"{path}:8:5: {ANCHOR_ERROR}"]
    await order(small, "u1")
    await small.advance(3600)
    _, body = await small.admin("GET", "/v1/messages?rule=r")
    assert [m["status"] for m in body["messages"]] == ["sent"]


async def test_a_control_character_costs_its_own_file_only_on_reload(
    small: Client, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    path = rules / "r.yaml"
    path.write_text(RULE.replace("TEMPLATE", "old").replace("1h", "\x00h"))
    (rules / "r2.yaml").write_text(RULE.replace("rule: r", "rule: r2").replace("TEMPLATE", "old"))
    status, body = await small.admin("POST", "/v1/rules/reload")
    assert status == 200
    problem = (
        f"{path}:5:11: invalid YAML: unprintable character U+0000 is not allowed (remove it; "
        'inside a double-quoted string write it as the escape "\\x00")'
    )
    states = {r["id"]: (r["state"], r["errors"]) for r in body["rules"]}
    assert states == {"r": ("stale", [problem]), "r2": ("active", [])}
    await order(small, "u1")  # both run: r at its previous version, r2 as just loaded
    await small.advance(3600)
    _, body = await small.admin("GET", "/v1/messages")
    assert sorted((m["rule"], m["status"]) for m in body["messages"]) == [
        ("r", "sent"),
        ("r2", "sent"),
    ]


async def test_a_deleted_template_stays_for_the_running_instances_of_an_older_version(
    small: Client, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    await order(small, "u1")  # waits an hour, at the version that uses `old`
    _, body = await small.admin("GET", "/v1/rules")
    old_version = body["rules"][0]["version"]
    (rules / "r.yaml").write_text(RULE.replace("TEMPLATE", "new"))
    (rules / "new.yaml").write_text(template("new", "New text"))
    (rules / "old.yaml").unlink()
    _, body = await small.admin("POST", "/v1/rules/reload")
    note = (
        f"{rules / 'old.yaml'}:1:1: template 'old' was deleted, but running instances of rule "
        f"'r' (version {old_version}) still use it: its last loaded version is kept for them "
        "until the daemon restarts"
    )
    rule = body["rules"][0]
    assert (rule["id"], rule["state"], rule["version"] != old_version) == ("r", "active", True)
    assert rule["errors"] == [note]
    assert body["problems"] == [note]
    assert body["templates"] == ["new", "old"]
    await order(small, "u2")  # the new version, with the new template
    await small.advance(3600)
    _, body = await small.admin("GET", "/v1/messages?rule=r")
    sent = sorted((m["user_id"], m["status"], m["template"]) for m in body["messages"])
    assert sent == [("u1", "sent", "old"), ("u2", "sent", "new")]
    # nothing runs the old version any more: the template goes at the next reload
    _, body = await small.admin("POST", "/v1/rules/reload")
    assert (body["templates"], body["problems"]) == (["new"], [])


async def test_a_daemon_starts_with_a_bomb_in_its_rules_and_leaves_it_out(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULE.replace("TEMPLATE", "t"))
    (rules / "t.yaml").write_text(template("t", "Hi"))
    (rules / "bomb.yaml").write_text(
        RULE.replace("rule: r", "rule: bomb").replace("TEMPLATE", "t") + BOMB
    )
    port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"url": f"sqlite:///{tmp_path}/kaskad.db"},
            "rules": {"path": str(rules), "watch": True},
            "logging": {"format": "json", "level": "info"},
        },
    )
    async with Daemons() as daemons, http_session() as session:
        daemon = await daemons.start(config, port)
        await daemon.started(within=30)
        problem = f"{rules / 'bomb.yaml'}:8:5: {ANCHOR_ERROR}"
        assert [line["problem"] for line in daemon.events("rules.invalid")] == [problem]
        status, body = await http_json(session, "GET", f"{daemon.url}/v1/rules")
        assert status == 200
        assert [r["id"] for r in body["rules"]] == ["r"]
        assert body["problems"] == [problem]
        # a bomb written over the rule on the fly: the watcher reloads, the rule stays
        mark = len(daemon.lines)
        (rules / "r.yaml").write_text(RULE.replace("TEMPLATE", "t") + BOMB)
        index, _ = await daemon.wait_for(
            "rules.invalid",
            within=30,
            after=mark,
            where=lambda line: "r.yaml:8:5" in line["problem"],
        )
        await daemon.wait_for("rules.loaded", within=30, after=index)
        status, body = await http_json(session, "GET", f"{daemon.url}/v1/rules")
        assert [(r["id"], r["state"]) for r in body["rules"]] == [("r", "stale")]
        assert daemon.running
