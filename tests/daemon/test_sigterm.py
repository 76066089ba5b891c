"""SPEC 10 on a graceful stop: SIGTERM while provider calls are in flight lets them finish,
records their answers, and the next run sends nothing again. Real processes, a real webhook
receiver that holds each call for a few seconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.webhook_receiver import FakeReceiver, Reply

from .proc import Daemons, free_port, http_json, http_session, poll, write_config

RULE = """\
rule: ping
trigger: {event: cart.updated}
steps:
  - send: {template: ping, cascade: [webhook]}
"""
TEMPLATE = """\
template: ping
webhook:
  body: {total: "{{ trigger.data.total }}"}
"""
USERS = [f"u{n}" for n in range(12)]
HOLD_S = 4.0  # each call is answered this long after it arrives
CONCURRENCY = 4  # calls in flight at once: the other messages wait their turn


def config(tmp_path: Path, port: int, receiver: FakeReceiver, drain_timeout_s: float) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "ping.yaml").write_text(RULE)
    (rules / "ping_t.yaml").write_text(TEMPLATE)
    return write_config(
        tmp_path / f"config-{port}.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port, "drain_timeout_s": drain_timeout_s},
            "storage": {"url": f"sqlite:///{tmp_path}/kaskad.db"},
            "rules": {"path": str(rules), "watch": False},
            "channels": {
                "webhook": {
                    "provider": "webhook",
                    "url": receiver.url,
                    "secret": receiver.secret,
                    "concurrency": CONCURRENCY,
                    "timeout_s": 30,
                }
            },
            "policies": {"quiet_hours": None, "frequency_caps": []},
            "logging": {"format": "json", "level": "info"},
        },
    )


@pytest.mark.parametrize(
    "drain_timeout_s",
    [10.0, 1.0],
    ids=["calls-answer-within-the-drain", "drain-timeout-before-the-answers"],
)
async def test_sigterm_lets_calls_in_flight_finish_and_sends_each_message_once(
    tmp_path: Path, drain_timeout_s: float
) -> None:
    async with FakeReceiver() as receiver, Daemons() as daemons:
        receiver.otherwise = Reply(delay_s=HOLD_S)
        port = free_port()
        first = await daemons.start(
            config(tmp_path, port, receiver, drain_timeout_s), port, "first"
        )
        await first.started()
        events = [
            {"type": "cart.updated", "user_id": u, "data": {"total": 10}, "id": f"c-{u}"}
            for u in USERS
        ]
        async with http_session() as session:
            status, body = await http_json(session, "POST", f"{first.url}/v1/events", json=events)
            assert status == 202, body
        # As many calls as the channel allows are held by the provider; stop now.
        await receiver.wait_deliveries(CONCURRENCY, within=30)
        in_flight = set(receiver.ids())
        assert await first.terminate() == 0, first.tail()
        assert set(receiver.ids()) == in_flight, "a send started after SIGTERM"
        (released,) = first.events("dispatch.released")
        assert released["count"] == len(USERS) - CONCURRENCY
        timed_out = first.events("dispatch.drain_timeout")
        if drain_timeout_s < HOLD_S:
            # The process did not wait for the provider past its drain timeout.
            assert [line["unanswered"] for line in timed_out] == [CONCURRENCY]
            assert all(d.status is None for d in receiver.deliveries)
        else:
            assert timed_out == [], first.tail()

        # The next run sends the messages never called; those answered are not sent again.
        receiver.otherwise = Reply()
        port = free_port()
        second = await daemons.start(
            config(tmp_path, port, receiver, drain_timeout_s), port, "second"
        )
        await second.started()
        async with http_session() as session:

            async def all_sent() -> bool | None:
                url = f"{second.url}/v1/messages?rule=ping&status=sent"
                status, body = await http_json(session, "GET", url)
                assert status == 200, body
                return True if len(body["messages"]) == len(USERS) else None

            await poll(all_sent, within=30, what="every message logged as sent")
        requeued = [line["count"] for line in second.events("dispatch.requeued_in_flight")]
        assert await second.terminate() == 0, second.tail()

    sends = Counter(receiver.ids())
    if drain_timeout_s < HOLD_S:
        # Only the calls still unanswered at the deadline went out again (SPEC 10).
        assert requeued == [CONCURRENCY]
        assert {m for m, n in sends.items() if n > 1} == in_flight, sends
        assert sorted(sends.values()) == [1] * (len(USERS) - CONCURRENCY) + [2] * CONCURRENCY
    else:
        assert requeued == []
        assert sorted(sends.values()) == [1] * len(USERS), sends
