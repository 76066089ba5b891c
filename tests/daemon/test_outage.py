"""A provider outage delays mail, never loses it (SPEC 7, 10): the in-process daemon on a
virtual clock sends through a real webhook receiver (and SMTP server) that fail on demand.

A provider that is down pauses its channel (backoff from 1 s to 5 min, Retry-After honoured,
one probe at a time) and keeps the queue; its messages give up only after `retry_for`, as
retries_exhausted, and the cascade goes on. Errors about one message do not pause anything.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.runtime.logs import configure
from tests.fakes.smtp import FakeSmtp, Script
from tests.fakes.webhook_receiver import FakeReceiver, Reply
from tests.pgdb import pg_schema

from .helpers import START, Client, make_config

TEMPLATE = """\
template: ping
webhook:
  body: {total: "{{ trigger.data.total }}"}
email: {subject: Ping, text: "{{ trigger.data.total }} in your cart"}
"""
USERS = [f"u{n}" for n in range(5)]


@pytest.fixture(autouse=True)
def _info_logs() -> Iterator[None]:
    """channel.probe_failed, channel.resumed and send.retrying are info lines."""
    configure(level="info", fmt="console")
    yield
    configure(level="warning", fmt="console")


def rule(cascade: str) -> str:
    return f"""\
rule: ping
trigger: {{event: cart.updated}}
steps:
  - send: {{template: ping, cascade: {cascade}}}
"""


@dataclass
class Run:
    client: Client
    daemon: Daemon
    receiver: FakeReceiver

    async def carts(self, users: list[str]) -> None:
        events: list[dict[str, Any]] = []
        for user in users:
            data = {"email": f"{user}@shop.test"}
            events.append({"type": "profile.updated", "user_id": user, "data": data})
            events.append({"type": "cart.updated", "user_id": user, "data": {"total": 10}})
        status, body = await self.client.post_events(events)
        assert status == 202, body

    async def advance_to(self, offset_s: float, step_s: float) -> None:
        """Settle now, then move the clock to START + offset_s, settling every step_s."""
        clock = self.daemon.clock
        assert isinstance(clock, VirtualClock)
        await self.client.advance(0)
        while clock.now() < START + offset_s:
            await self.client.advance(min(step_s, START + offset_s - clock.now()))

    async def messages(self, **query: str) -> list[dict[str, Any]]:
        params = "&".join(f"{k}={v}" for k, v in {"rule": "ping", **query}.items())
        status, body = await self.client.admin("GET", f"/v1/messages?{params}")
        assert status == 200, body
        return list(body["messages"])

    async def paused_gauge(self) -> float | None:
        status, text = await self.client.admin("GET", "/metrics")
        assert status == 200
        for line in text.splitlines():
            if line.startswith('kaskad_channel_paused{channel="webhook"}'):
                return float(line.split()[1])
        return None

    async def readyz_channels(self) -> Any:
        status, body = await self.client.request("GET", "/readyz")
        assert status == 200, body  # a paused channel does not make the daemon unready
        return body["checks"]["channels"]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    receiver: FakeReceiver,
    cascade: str = "[webhook]",
    webhook: str = "",
    email: str = "",
    storage_url: str | None = None,
) -> AsyncIterator[Run]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ping.yaml").write_text(rule(cascade))
    (rules / "ping_t.yaml").write_text(TEMPLATE)
    extra = f"""
channels:
  webhook: {{provider: webhook, url: "{receiver.url}", secret: "{receiver.secret}",
             timeout_s: 0.5{webhook}}}
{email}
"""
    config = make_config(tmp_path, rules, extra=extra, storage_url=storage_url)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Run(Client(daemon, session), daemon, receiver)
    finally:
        await daemon.stop()


# How a provider fails: each is a channel state, so each pauses the channel.
Failure = Callable[[FakeReceiver], Awaitable[None]]


async def refuse(r: FakeReceiver) -> None:
    await r.down()


async def answer_503(r: FakeReceiver) -> None:
    r.otherwise = Reply(status=503, text="upstream unavailable")


async def answer_429(r: FakeReceiver) -> None:
    r.otherwise = Reply(status=429, text="slow down")


async def time_out(r: FakeReceiver) -> None:
    r.otherwise = Reply(status=503, delay_s=30)  # held past the channel's 0.5 s timeout


async def recover(r: FakeReceiver) -> None:
    if r.otherwise.status != 200 or r.otherwise.delay_s:
        r.otherwise = Reply()
    else:
        await r.up()


@pytest.mark.parametrize(
    ("failure", "why"),
    [
        (refuse, "ClientConnectorError"),
        (answer_503, "HTTP 503"),
        (answer_429, "HTTP 429"),
        (time_out, "timeout"),
    ],
    ids=["connection-refused", "http-503", "http-429", "timeout"],
)
async def test_an_outage_of_ten_minutes_delays_every_message_and_loses_none(
    tmp_path: Path, failure: Failure, why: str
) -> None:
    async with FakeReceiver() as receiver, running(tmp_path, receiver) as run:
        await outage_then_recovery(run, failure, why)


async def test_an_outage_on_postgresql(tmp_path: Path) -> None:
    """The same on PostgreSQL, whose claims (SKIP LOCKED, orphans) take the same filters."""
    async with (
        pg_schema() as url,
        FakeReceiver() as receiver,
        running(tmp_path, receiver, storage_url=url) as run,
    ):
        await outage_then_recovery(run, answer_503, "HTTP 503")


async def outage_then_recovery(run: Run, failure: Failure, why: str) -> None:
    """Ten minutes of `failure`, then the provider is back: all sent once, none lost."""
    receiver = run.receiver
    await failure(receiver)
    with capture_logs() as logs:
        await run.carts(USERS)
        await run.advance_to(1, step_s=1)
        # Paused: shown by the gauge and /readyz, and the messages keep their place.
        assert await run.paused_gauge() == 1.0
        channels = await run.readyz_channels()
        assert channels["webhook"].startswith("paused: provider unavailable (")
        assert why in channels["webhook"]
        queued = await run.messages(status="queued")
        assert len(queued) == len(USERS)
        calls_at_start = len(receiver.deliveries)
        await run.advance_to(600, step_s=10)
        # One probe at a time, backing off: 1 s, 2 s, 4 s ... at most 5 min apart.
        probes = len(receiver.deliveries) - calls_at_start
        assert probes <= 10 if failure is not refuse else probes == 0
        assert await run.messages(status="failed") == []
        assert await run.paused_gauge() == 1.0
        await recover(receiver)
        await run.advance_to(600 + 301, step_s=10)  # the next probe is at most 5 min away

    sent = await run.messages(status="sent")
    assert len(sent) == len(USERS)
    assert await run.messages(status="failed") == []
    assert await run.messages(status="skipped") == []
    assert sorted(Counter(receiver.accepted_ids()).values()) == [1] * len(USERS)
    assert await run.paused_gauge() == 0.0
    assert await run.readyz_channels() == "ok"
    events = [e for e in logs if e["event"].startswith("channel.")]
    assert [e["event"] for e in events][:1] == ["channel.paused"]
    assert why in events[0]["why"] and events[0]["until"] == "2026-11-23T10:00:01Z"
    assert [e["event"] for e in events][-1] == "channel.resumed", events
    assert all(e["event"] == "channel.probe_failed" for e in events[1:-1])
    # Nothing counted against the messages: no attempt was burnt while paused.
    assert not [e for e in logs if e["event"] in ("send.retrying", "send.gave_up")]


async def test_the_pause_backs_off_from_one_second_doubling_to_five_minutes(
    tmp_path: Path,
) -> None:
    async with FakeReceiver() as receiver, running(tmp_path, receiver) as run:
        await answer_503(receiver)
        with capture_logs() as logs:
            await run.carts(USERS[:1])
            await run.advance_to(1500, step_s=1)
    untils = [e["until"] for e in logs if e["event"].startswith("channel.p")]
    # Paused at 10:00:00; a failed probe at each `until` pauses it twice as long.
    assert untils[:11] == [
        "2026-11-23T10:00:01Z",  # +1 s
        "2026-11-23T10:00:03Z",  # +2 s
        "2026-11-23T10:00:07Z",
        "2026-11-23T10:00:15Z",
        "2026-11-23T10:00:31Z",
        "2026-11-23T10:01:03Z",
        "2026-11-23T10:02:07Z",
        "2026-11-23T10:04:15Z",  # +128 s
        "2026-11-23T10:08:31Z",  # +256 s
        "2026-11-23T10:13:31Z",  # +300 s: the longest pause
        "2026-11-23T10:18:31Z",
    ]


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    async with FakeReceiver() as receiver, running(tmp_path, receiver) as run:
        throttled = Reply(status=429, text="slow down", headers={"Retry-After": "120"})
        receiver.replies = [throttled] * len(USERS)
        await run.carts(USERS)
        await run.advance_to(0, step_s=1)
        calls = len(receiver.deliveries)
        assert calls == len(USERS)  # sent at once, all refused
        await run.advance_to(119, step_s=1)
        assert len(receiver.deliveries) == calls  # nothing before Retry-After is over
        assert await run.paused_gauge() == 1.0
        await run.advance_to(120, step_s=1)
        assert len(await run.messages(status="sent")) == len(USERS)
        assert sorted(Counter(receiver.accepted_ids()).values()) == [1] * len(USERS)
        assert await run.paused_gauge() == 0.0


@pytest.mark.parametrize("cascade", ["[webhook, email]", "[webhook]"])
async def test_an_outage_longer_than_retry_for_gives_up_and_the_cascade_goes_on(
    tmp_path: Path, cascade: str
) -> None:
    async with (
        FakeReceiver() as receiver,
        running(tmp_path, receiver, cascade, webhook=", retry_for: 30m") as run,
    ):
        await answer_503(receiver)
        await run.carts(USERS)
        await run.advance_to(29 * 60, step_s=30)
        assert await run.messages(status="failed") == []
        assert len(await run.messages(status="queued")) == len(USERS)
        await run.advance_to(36 * 60, step_s=30)  # a probe comes at most 5 min later

        assert await run.messages(status="queued") == []
        # Nothing left to hold: the channel is no longer shown paused (the next failure
        # pauses it again at once).
        assert await run.paused_gauge() == 0.0
        status, timeline = await run.client.admin("GET", "/v1/users/u0/timeline")
        assert status == 200, timeline
        sends = [
            (m["kind"], m["channel"], m["reason"])
            for m in timeline["timeline"]
            if m["kind"].startswith("message.")
        ]
        if cascade == "[webhook, email]":
            assert sorted(sends) == [
                ("message.failed", "webhook", "retries_exhausted"),
                ("message.sent", "email", None),
            ]
            assert len(await run.messages(status="sent")) == len(USERS)
        else:
            # The step's one skip names the real reason, not a missing address.
            assert sends == [("message.skipped", "webhook", "retries_exhausted")]
            assert len(await run.messages(status="skipped")) == len(USERS)


async def test_an_answer_about_one_message_does_not_pause_the_channel(tmp_path: Path) -> None:
    with FakeSmtp(script={"u0@shop.test": Script(rcpt="550 5.1.1 User unknown")}) as smtp:
        email = f"""  email: {{provider: smtp, host: "{smtp.host}", port: {smtp.port}, tls: none,
           from: "Shop <news@shop.example>"}}"""
        async with (
            FakeReceiver() as receiver,
            running(tmp_path, receiver, "[webhook, email]", email=email) as run,
        ):
            # u0's webhook has bad content (reject_message), then its mailbox is unknown
            # (reject_recipient); everyone else gets through on the webhook at once.
            receiver.per_user["u0"] = Reply(status=400, text="bad body")
            receiver.per_user["u1"] = Reply(status=400, text="bad body")
            await run.carts(USERS)
            await run.advance_to(0, step_s=1)
            assert await run.paused_gauge() == 0.0
            assert await run.readyz_channels() == "ok"
            sent = await run.messages(status="sent")
            assert sorted((m["user_id"], m["channel"]) for m in sent) == [
                ("u1", "email"),
                ("u2", "webhook"),
                ("u3", "webhook"),
                ("u4", "webhook"),
            ]
            failed = await run.messages(user_id="u0")
            assert sorted((m["channel"], m["status"], m["reason"]) for m in failed) == [
                ("email", "skipped", "provider_rejected"),
                ("webhook", "failed", "provider_rejected"),
            ], [(m["channel"], m["status"], m["reason"], m["id"]) for m in failed]
            assert [r.rcpt_tos for r in smtp.received] == [["u1@shop.test"]]


async def test_max_retries_counts_a_messages_own_retries_while_the_channel_works(
    tmp_path: Path,
) -> None:
    """One user's calls fail while everyone else's go through: that message is retried with
    its own backoff (2 s, 4 s), then gives up after max_retries; the channel never pauses."""
    async with (
        FakeReceiver() as receiver,
        running(tmp_path, receiver, webhook=", max_retries: 2, concurrency: 1") as run,
    ):
        receiver.per_user["poison"] = Reply(status=503, text="this one only")
        with capture_logs() as logs:
            await run.carts(["ok0"])
            await run.advance_to(0, step_s=1)  # the channel answers: it works
            await run.carts(["poison"])
            for n, at in enumerate((0, 2, 6), start=1):
                await run.carts([f"ok{n}"])  # a good answer comes first each time
                await run.advance_to(at, step_s=1)
        retries = [e["attempt"] for e in logs if e["event"] == "send.retrying"]
        assert retries == [1, 2]
        assert not [e for e in logs if e["event"].startswith("channel.")]
        (poison,) = await run.messages(user_id="poison")
        assert (poison["status"], poison["reason"]) == ("skipped", "retries_exhausted")
        assert len(await run.messages(status="sent")) == 4
        assert [d.user_id for d in receiver.deliveries].count("poison") == 3


async def test_a_config_error_pauses_until_restart_and_shows_in_readyz(tmp_path: Path) -> None:
    async with FakeReceiver() as receiver, running(tmp_path, receiver, "[webhook, email]") as run:
        receiver.replies = [Reply(status=410, text="gone")]
        await run.carts(USERS[:1])
        await run.advance_to(0, step_s=1)
        assert (await run.readyz_channels())["webhook"].startswith("paused: endpoint gone")
        assert await run.paused_gauge() == 1.0
        await run.carts(USERS[1:])
        await run.advance_to(3600, step_s=600)
        # Nothing more went to the endpoint; every cascade moved on to e-mail.
        assert len(receiver.deliveries) == 1
        assert await run.paused_gauge() == 1.0
        sent = await run.messages(status="sent")
        assert sorted(m["channel"] for m in sent) == ["email"] * len(USERS)
