"""Issue 13, acting from the API: pause and resume a rule (its running instances held or
not), end an instance, send a test, each in the audit log; on an in-process daemon with a
virtual clock and a real SQLite store."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from tests.fakes.twilio import FakeTwilio
from tests.helpers import write_rules
from tests.pgdb import pg_schema

from .helpers import ADMIN, INGEST, START, Client

RULE = """\
rule: nudge
category: transactional
trigger: {event: cart.updated}
mode: parallel
steps:
  - wait: 1h
  - send: {template: nudge_t, cascade: [sms]}
"""
TEMPLATE = """\
template: nudge_t
sms:
  text: "Your cart of {{ trigger.data.total }} is waiting"
"""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


VIEWER = {"Authorization": "Bearer viewer-token"}
MARKETER = {"Authorization": "Bearer marketer-token"}
ADMIN2 = {"Authorization": "Bearer second-admin-token"}
USERS = f"""
  users:
    - {{name: vera, token_sha256: {sha("viewer-token")}, role: viewer}}
    - {{name: mark, token_sha256: "{sha("marketer-token").upper()}", role: marketer}}
    - {{name: ada, token_sha256: {sha("second-admin-token")}, role: admin}}
"""


def config_text(
    tmp_path: Path,
    rules: Path,
    extra: str = "",
    url: str | None = None,
    policies: str = "{quiet_hours: null, frequency_caps: []}",
) -> str:
    return f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "{url or f"sqlite:///{tmp_path}/kaskad.db"}"}}
rules: {{path: "{rules}", watch: false}}
auth:
  ingest_tokens: [ingest-token]
  admin_token: admin-token
{USERS}
policies: {policies}
{extra}
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def acts(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """The daemon on either store: the pauses, the hold and the audit log live there."""
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = await stack.enter_async_context(pg_schema())
        config = parse_config(config_text(tmp_path, rules, url=url))
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            yield Client(daemon, session)
        await daemon.stop()


async def cart(client: Client, user: str, n: int = 1) -> None:
    events = [
        {"type": "profile.updated", "user_id": user, "data": {"phone": "+15550001234"}},
        {"type": "cart.updated", "user_id": user, "id": f"c-{user}-{n}", "data": {"total": 5}},
    ]
    status, body = await client.post_events(events, INGEST)
    assert status == 202, body
    await client.daemon.pump()


async def instances(client: Client, user: str) -> list[dict[str, Any]]:
    status, body = await client.admin("GET", f"/v1/users/{user}/timeline")
    assert status == 200, body
    return list(body["instances"])


async def sends(client: Client) -> list[dict[str, Any]]:
    status, body = await client.admin("GET", "/v1/messages?rule=nudge")
    assert status == 200, body
    return [m for m in body["messages"] if m["status"] != "cancelled"]


async def test_roles_allow_reads_to_all_actions_to_marketers_and_the_rest_to_admins(
    acts: Client,
) -> None:
    await cart(acts, "u1")
    (inst,) = await instances(acts, "u1")
    reads = ["/v1/rules", "/v1/messages", "/v1/stats", "/v1/users/u1/timeline", "/v1/audit"]
    for headers in (VIEWER, MARKETER, ADMIN2, ADMIN):
        for path in reads:
            status, body = await acts.request("GET", path, headers=headers)
            assert status == 200, (headers, path, body)
    marketer_writes: list[tuple[str, Any]] = [
        ("/v1/rules/nudge/pause", {"hold": False}),
        ("/v1/rules/nudge/resume", None),
        (f"/v1/instances/{inst['id']}/end", None),
        ("/v1/test-sends", {"template": "nudge_t", "channel": "sms", "address": "+1555"}),
    ]
    admin_writes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/rules/reload", None),
        ("PUT", "/v1/profiles/u9", {"email": "u9@example.com"}),
        ("DELETE", "/v1/profiles/u9", None),
        ("POST", "/v1/rfm/recompute", None),
    ]
    for path, body in marketer_writes:
        status, answer = await acts.request("POST", path, headers=VIEWER, json=body)
        assert status == 403, (path, answer)
        assert answer["error"]["code"] == "forbidden"
        assert "needs role marketer" in answer["error"]["message"]
        assert "'vera' has role viewer" in answer["error"]["message"]
    for method, path, body in admin_writes:
        for headers in (VIEWER, MARKETER):
            status, answer = await acts.request(method, path, headers=headers, json=body)
            assert status == 403, (method, path, answer)
            assert "needs role admin" in answer["error"]["message"]
        status, answer = await acts.request(method, path, headers=ADMIN2, json=body)
        assert status < 300, (method, path, answer)
    # A marketer may act (each answered, none refused for the role).
    for path, body in marketer_writes:
        status, answer = await acts.request("POST", path, headers=MARKETER, json=body)
        assert status == 200, (path, answer)
    for headers in ({}, {"Authorization": "Bearer nobody"}):
        status, answer = await acts.request("GET", "/v1/rules", headers=headers)
        assert status == 401, answer
    # Who did what is in the audit log, by account name.
    status, body = await acts.admin("GET", "/v1/audit")
    assert [(a["who"], a["action"]) for a in reversed(body["actions"])] == [
        ("mark", "pause"),
        ("mark", "resume"),
        ("mark", "end_instance"),
        ("mark", "test_send"),
    ]


async def test_a_paused_rule_starts_nothing_until_resumed_and_says_so_everywhere(
    acts: Client,
) -> None:
    status, body = await acts.request(
        "POST", "/v1/rules/nudge/pause", headers=MARKETER, json={"hold": False}
    )
    assert status == 200, body
    assert body["paused"] is True and body["hold"] is False and body["by"] == "mark"
    status, rules = await acts.admin("GET", "/v1/rules")
    (rule,) = rules["rules"]
    assert rule["state"] == "paused" and rule["paused"]["by"] == "mark"
    status, stats = await acts.admin("GET", "/v1/stats")
    assert [r["state"] for r in stats["rules"]] == ["paused"]
    await cart(acts, "u1")
    assert await instances(acts, "u1") == []
    # A reload keeps the pause (it lives in the store, not in the rule file).
    status, body = await acts.admin("POST", "/v1/rules/reload")
    assert status == 200 and body["rules"][0]["state"] == "paused"
    await cart(acts, "u1", 2)
    assert await instances(acts, "u1") == []

    status, body = await acts.request("POST", "/v1/rules/nudge/resume", headers=MARKETER)
    assert status == 200 and body["paused"] is False, body
    await cart(acts, "u1", 3)
    assert [i["status"] for i in await instances(acts, "u1")] == ["active"]
    status, rules = await acts.admin("GET", "/v1/rules")
    assert rules["rules"][0]["state"] == "active" and rules["rules"][0]["paused"] is None
    # Unknown rules and bad bodies are 4xx with a message.
    status, body = await acts.request("POST", "/v1/rules/nope/pause", headers=MARKETER)
    assert status == 404 and "no rule 'nope'" in body["error"]["message"]
    status, body = await acts.request(
        "POST", "/v1/rules/nudge/pause", headers=MARKETER, json={"hold": "yes"}
    )
    assert status == 400 and "hold" in body["error"]["message"]
    status, body = await acts.request("POST", "/v1/rules/nudge/pause", headers=MARKETER, data=b"{")
    assert status == 400, body


@pytest.mark.parametrize("hold", [True, False])
async def test_running_instances_are_held_or_go_on_as_chosen_at_pause_time(
    acts: Client, hold: bool
) -> None:
    await cart(acts, "u1")
    status, body = await acts.request(
        "POST", "/v1/rules/nudge/pause", headers=MARKETER, json={"hold": hold}
    )
    assert status == 200, body
    await acts.advance(2 * 3600)  # the wait of 1h is over
    if hold:
        # Its timer did not fire: still waiting, nothing sent.
        assert await sends(acts) == []
        (inst,) = await instances(acts, "u1")
        assert inst["status"] == "active" and inst["waiting"] == "wait"
        status, body = await acts.request("POST", "/v1/rules/nudge/resume", headers=MARKETER)
        assert status == 200
        await acts.advance(0)
        # On resume the timer that came due meanwhile fires at once.
    assert [m["status"] for m in await sends(acts)] == ["sent"]


LATE_RULE = RULE.replace("wait: 1h", "wait: 20s")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_time_held_does_not_count_toward_max_lateness(tmp_path: Path, kind: str) -> None:
    """With max_lateness 10s, a 20s wait held for 40s (across a restart of the daemon) fires
    on resume as if it came due then; lateness after the resume counts as ever."""
    rules = write_rules(tmp_path, TEMPLATE, LATE_RULE)
    policies = "{quiet_hours: null, frequency_caps: [], max_lateness: 10s}"
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(pg_schema()) if kind == "postgres" else None
        config = parse_config(config_text(tmp_path, rules, url=url, policies=policies))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        clock = VirtualClock(START)

        async def started() -> Client:
            daemon = Daemon(config, clock, background=False)
            await daemon.start()
            stack.push_async_callback(daemon.stop)
            return Client(daemon, session)

        async def act(client: Client, what: str, body: Any = None) -> None:
            status, answer = await client.request(
                "POST", f"/v1/rules/nudge/{what}", headers=MARKETER, json=body
            )
            assert status == 200, answer

        client = await started()
        await cart(client, "u1")
        await act(client, "pause", {"hold": True})
        await client.advance(40)
        assert await sends(client) == []
        # The hold spans a restart: the new daemon keeps the instance held.
        await client.daemon.stop()
        clock.advance_to(clock.now() + 3600)
        client = await started()
        await client.advance(0)
        assert await sends(client) == []
        await act(client, "resume")
        await client.advance(0)
        assert [m["status"] for m in await sends(client)] == ["sent"]
        (inst,) = await instances(client, "u1")
        assert (inst["status"], inst["end_reason"]) == ("completed", None), inst

        # Held again, then found 30s after the resume: those 30s count, the hold does not.
        await cart(client, "u2")
        await act(client, "pause", {"hold": True})
        await client.advance(40)
        await act(client, "resume")
        clock.advance_to(clock.now() + 30)
        await client.daemon.pump()
        (inst,) = await instances(client, "u2")
        assert (inst["status"], inst["end_reason"]) == ("expired", "30s late"), inst
        _, body = await client.admin("GET", "/v1/messages?rule=nudge&status=skipped")
        assert [(m["user_id"], m["reason"]) for m in body["messages"]] == [("u2", "expired")]


async def test_ending_an_instance_cancels_its_timer_and_is_audited(acts: Client) -> None:
    await cart(acts, "u1")
    (inst,) = await instances(acts, "u1")
    status, body = await acts.request("POST", f"/v1/instances/{inst['id']}/end", headers=MARKETER)
    assert status == 200, body
    assert body == {
        "id": inst["id"],
        "rule": "nudge",
        "user_id": "u1",
        "status": "stopped",
        "end_reason": "ended_by_user",
    }
    (ended,) = await instances(acts, "u1")
    assert ended["status"] == "stopped" and ended["end_reason"] == "ended_by_user"
    assert ended["next_at"] is None
    await acts.advance(2 * 3600)
    assert await sends(acts) == []
    status, body = await acts.request("POST", f"/v1/instances/{inst['id']}/end", headers=MARKETER)
    assert status == 409 and "ended already" in body["error"]["message"]
    status, body = await acts.request("POST", "/v1/instances/i-nope/end", headers=MARKETER)
    assert status == 404
    status, body = await acts.admin("GET", "/v1/audit?target=nudge")
    (row,) = body["actions"]
    assert row["who"] == "mark" and row["action"] == "end_instance"
    assert row["detail"] == {"instance": inst["id"], "user_id": "u1"}
    # Found by the instance's id as well (the row's target is its rule, for the rule page).
    status, body = await acts.admin("GET", f"/v1/audit?target={inst['id']}")
    assert status == 200 and body["actions"] == [row]
    assert (await acts.admin("GET", "/v1/audit?target=i-nope"))[1]["actions"] == []


async def test_a_test_send_reaches_the_provider_and_counts_nowhere(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    async with FakeTwilio() as twilio:
        channels = (
            f'channels: {{sms: {{provider: twilio, base_url: "{twilio.base_url}", '
            f"account_sid: {twilio.account_sid}, auth_token: {twilio.auth_token}, "
            'from: "+15550001111"}}'
        )
        config = parse_config(config_text(tmp_path, rules, channels))
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                client = Client(daemon, session)
                status, before = await client.admin("GET", "/v1/stats")
                metrics_before = await (
                    await session.get(f"{client.base}/metrics", headers=ADMIN)
                ).text()
                status, body = await client.request(
                    "POST",
                    "/v1/test-sends",
                    headers=MARKETER,
                    json={"template": "nudge_t", "channel": "sms", "address": "+4915112345678"},
                )
                assert status == 200, body
                assert body["outcome"] == "accepted" and body["provider_id"], body
                (request,) = twilio.requests
                assert request.form["To"] == "+4915112345678"
                assert "Your cart of" in request.form["Body"]
                # Nowhere in the numbers: no message, no stats, no metric moved.
                status, after = await client.admin("GET", "/v1/stats")
                assert after["rules"] == before["rules"]
                status, messages = await client.admin("GET", "/v1/messages")
                assert messages["messages"] == []
                metrics_after = await (
                    await session.get(f"{client.base}/metrics", headers=ADMIN)
                ).text()
                assert 'kaskad_sends_total{channel="sms"' not in metrics_after
                assert metrics_before.count("kaskad_sends_total{") == 0
                status, audit = await client.admin("GET", "/v1/audit?target=nudge_t")
                (row,) = audit["actions"]
                assert row["action"] == "test_send" and row["who"] == "mark"
                assert row["detail"]["outcome"] == "accepted"
                # A real send of the rule counts, once: the test send is not among them.
                await cart(client, "u1")
                await client.advance(3600)
                assert len(twilio.requests) == 2
                status, after = await client.admin("GET", "/v1/stats")
                assert after["rules"][0]["funnel"]["sends"] == 1
                metrics_after = await (
                    await session.get(f"{client.base}/metrics", headers=ADMIN)
                ).text()
                assert 'kaskad_sends_total{channel="sms",outcome="accepted"} 1.0' in metrics_after
                # Bad requests: 4xx naming the field.
                for bad, word in [
                    ({"template": "nope", "channel": "sms", "address": "x"}, "nope"),
                    ({"template": "nudge_t", "channel": "email", "address": "x"}, "channel"),
                    ({"template": "nudge_t", "channel": "sms"}, "address"),
                    ({"template": "nudge_t", "channel": "sms", "address": "x", "y": 1}, "y"),
                    ([], "object"),
                ]:
                    status, answer = await client.request(
                        "POST", "/v1/test-sends", headers=MARKETER, json=bad
                    )
                    assert 400 <= status < 500 and word in answer["error"]["message"], answer
        finally:
            await daemon.stop()
