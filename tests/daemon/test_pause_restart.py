"""Issue 13: a rule paused through the API stays paused across a restart of the real
daemon process (the pause lives in the store), `kaskad stats` says so, and once resumed
the rule starts instances again; two replicas on one PostgreSQL database share a pause."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.cli import main as cli_main
from engine.runtime.logs import configure
from tests.pgdb import pg_schema

from .proc import Daemons, free_port, http_json, http_session, poll, write_config
from .test_actions import RULE, TEMPLATE

MARKETER = {"Authorization": "Bearer marketer-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
INGEST = {"Authorization": "Bearer ingest-token"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    yield
    configure(level="warning", fmt="console")


def config(tmp_path: Path, port: int, url: str | None = None) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "nudge.yaml").write_text(RULE)
    (rules / "nudge_t.yaml").write_text(TEMPLATE)
    return write_config(
        tmp_path / f"config-{port}.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"url": url or f"sqlite:///{tmp_path}/kaskad.db"},
            "rules": {"path": str(rules), "watch": False},
            "auth": {
                "ingest_tokens": ["ingest-token"],
                "admin_token": "admin-token",
                "users": [
                    {
                        "name": "mark",
                        "token_sha256": hashlib.sha256(b"marketer-token").hexdigest(),
                        "role": "marketer",
                    }
                ],
            },
            "policies": {"quiet_hours": None, "frequency_caps": []},
            "logging": {"format": "json", "level": "info"},
        },
    )


async def cart_started(session: aiohttp.ClientSession, url: str, user: str) -> int:
    """Post a user's cart; once it is processed, how many instances it started."""
    events = [
        {"type": "profile.updated", "user_id": user, "data": {"phone": "+15550001234"}},
        {"type": "cart.updated", "user_id": user, "data": {"total": 5}},
    ]
    status, body = await http_json(session, "POST", f"{url}/v1/events", json=events, headers=INGEST)
    assert status == 202, body

    async def processed() -> int | None:
        status, body = await http_json(session, "GET", f"{url}/v1/profiles/{user}", headers=ADMIN)
        if status != 200:
            return None
        status, body = await http_json(
            session, "GET", f"{url}/v1/users/{user}/timeline", headers=ADMIN
        )
        return len(body["instances"])

    return await poll(processed, within=20, what=f"{user}'s events processed")


async def test_a_pause_survives_a_restart_and_a_resume_starts_instances_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Daemons() as daemons, http_session() as session:
        port = free_port()
        first = await daemons.start(config(tmp_path, port), port, "first")
        await first.started()
        status, body = await http_json(
            session, "POST", f"{first.url}/v1/rules/nudge/pause", headers=MARKETER, json={}
        )
        assert status == 200 and body["paused"], body
        assert await cart_started(session, first.url, "u1") == 0
        assert await first.terminate() == 0, first.tail()

        port = free_port()
        second = await daemons.start(config(tmp_path, port), port, "second")
        await second.started()
        status, body = await http_json(session, "GET", f"{second.url}/v1/rules", headers=ADMIN)
        (rule,) = body["rules"]
        assert rule["state"] == "paused" and rule["paused"]["by"] == "mark", rule
        assert await cart_started(session, second.url, "u2") == 0
        code = await asyncio.to_thread(cli_main, ["stats", "--config", str(config(tmp_path, port))])
        out = capsys.readouterr().out
        assert code == 0 and "nudge (paused)" in out, out  # a rule with no data yet

        status, body = await http_json(
            session, "POST", f"{second.url}/v1/rules/nudge/resume", headers=MARKETER
        )
        assert status == 200 and not body["paused"], body
        assert await cart_started(session, second.url, "u3") == 1
        status, body = await http_json(session, "GET", f"{second.url}/v1/audit", headers=ADMIN)
        assert [(a["who"], a["action"]) for a in body["actions"]] == [
            ("mark", "resume"),
            ("mark", "pause"),
        ]


async def test_replicas_on_one_database_see_a_pause_within_seconds(tmp_path: Path) -> None:
    """Paused through one PostgreSQL replica, the other starts nothing once it has read the
    pause (every 2 s); resumed through the other, the first starts instances again."""
    async with pg_schema() as url, Daemons() as daemons, http_session() as session:
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            replicas.append(await daemons.start(config(tmp_path, port, url), port, name))
        await asyncio.gather(*(r.started() for r in replicas))
        a, b = replicas

        async def state_at(replica_url: str, wanted: str) -> bool | None:
            status, body = await http_json(session, "GET", f"{replica_url}/v1/rules", headers=ADMIN)
            return True if status == 200 and body["rules"][0]["state"] == wanted else None

        status, body = await http_json(
            session, "POST", f"{a.url}/v1/rules/nudge/pause", headers=MARKETER, json={}
        )
        assert status == 200, body
        await poll(lambda: state_at(b.url, "paused"), within=10, what="b reads the pause")
        assert await cart_started(session, b.url, "u1") == 0
        status, body = await http_json(
            session, "POST", f"{b.url}/v1/rules/nudge/resume", headers=MARKETER
        )
        assert status == 200, body
        await poll(lambda: state_at(a.url, "active"), within=10, what="a reads the resume")
        assert await cart_started(session, a.url, "u2") == 1
