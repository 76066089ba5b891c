"""The delivery log on both stores: every filter and their mixes, cursor paging (ties on the
time broken by id), and each message's history written by every path that changes it: the
engine's saves, the dispatcher's claims and retries, erasure and retention."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

from engine.core.changes import Changes
from engine.core.model import Message
from engine.store import Store
from tests.test_store_contract import T0, msg


async def save(store: Store, now: float, *messages: Message) -> None:
    await store.save(Changes(messages={m.id: m for m in messages}, now=now))


async def test_history_of_a_message_through_claims_retries_answer_and_reactions(
    store: Store,
) -> None:
    m = msg("m1", "u1", reason="quiet_hours_deferred")
    await save(store, T0, m)
    assert [c.id for c in await store.claim_queued(T0 + 1, 10)] == ["m1"]
    await store.reschedule("m1", 1, T0 + 30, "HTTP 503 from the provider", at=T0 + 2)
    assert await store.claim_queued(T0 + 10, 10) == []  # not due yet
    (claimed,) = await store.claim_queued(T0 + 30, 10)
    await store.record_outcome("m1", '{"kind": "accepted"}')
    sent = replace(claimed, status="sent", sent_at=T0 + 31, provider_id="prov-1", attempts=1)
    await save(store, T0 + 31, sent)
    # A click implies the open and the delivery; saving it again adds nothing.
    clicked = replace(
        sent, status="clicked", delivered_at=T0 + 90, opened_at=T0 + 90, clicked_at=T0 + 90
    )
    await save(store, T0 + 95, clicked)
    await save(store, T0 + 96, clicked)
    assert await store.message_history("m1") == [
        (T0, "queued", "quiet_hours_deferred"),
        (T0 + 1, "sending", "attempt 1"),
        (T0 + 2, "retry", "attempt 1: HTTP 503 from the provider"),
        (T0 + 30, "sending", "attempt 2"),
        (T0 + 31, "sent", "provider id prov-1"),
        (T0 + 90, "delivered", None),
        (T0 + 90, "opened", None),
        (T0 + 90, "clicked", None),
    ]
    skipped = msg("m2", "u1", step="2", status="skipped", reason="no_consent")
    await save(store, T0 + 5, skipped)
    assert await store.message_history("m2") == [(T0, "skipped", "no_consent")]
    # A synchronous answer (simulate): queued and failed in one save, at the unit's time.
    failed = msg(
        "m3", "u2", step="3", status="failed", reason="provider_rejected", detail="550 no such user"
    )
    await save(store, T0 + 7, failed)
    assert await store.message_history("m3") == [
        (T0, "queued", None),
        (T0 + 7, "failed", "provider_rejected: 550 no such user"),
    ]
    cancelled = msg("m4", "u2", step="4")
    await save(store, T0, cancelled)
    await save(store, T0 + 8, replace(cancelled, status="cancelled", reason="exited"))
    assert (await store.message_history("m4"))[-1] == (T0 + 8, "cancelled", "exited")
    assert await store.message_history("nope") == []
    # Erasure keeps the history's times and statuses, not its details.
    await store.save(Changes(erased_users={"u2"}))
    assert await store.message_history("m3") == [
        (T0, "queued", None),
        (T0 + 7, "failed", None),
    ]
    assert (await store.message_history("m1"))[0][2] == "quiet_hours_deferred"  # not u2's
    # Retention deletes the history with its message.
    assert await store.delete_messages_before(T0 + 1, 100) == 4
    for mid in ("m1", "m2", "m3", "m4"):
        assert await store.message(mid) is None
        assert await store.message_history(mid) == []


def _log(n: int) -> list[Message]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        status = rnd.choice(["sent", "delivered", "skipped", "failed", "queued", "clicked"])
        reason = {"skipped": rnd.choice(["no_consent", "frequency_cap"]), "failed": None}.get(
            status
        )
        out.append(
            msg(
                f"m{i:03d}",
                rnd.choice(["u1", "u2", "u3"]),
                iid=f"i{i}",
                rule_id=rnd.choice(["r1", "r2"]),
                channel=rnd.choice(["email", "sms", None]),
                status=status,
                reason=reason,
                # Several messages per second: ties on the time are broken by id.
                created_at=T0 + rnd.randrange(20),
            )
        )
    return out


async def test_filters_mix_and_pages_follow_the_cursor(store: Store) -> None:
    log = _log(60)
    await save(store, T0 + 30, *log)
    newest = sorted(log, key=lambda m: (m.created_at, m.id), reverse=True)
    filters: dict[str, list[Any]] = {
        "user_id": [None, "u2"],
        "rule": [None, "r1"],
        "status": [None, "skipped", "sent"],
        "channel": [None, "sms"],
        "reason": [None, "no_consent"],
        "since": [None, T0 + 5],
        "until": [None, T0 + 15],
    }
    for values in itertools.product(*filters.values()):
        f = dict(zip(filters, values, strict=True))
        expected = [
            m.id
            for m in newest
            if all(
                f[k] is None or getattr(m, "rule_id" if k == "rule" else k) == f[k]
                for k in ("user_id", "rule", "status", "channel", "reason")
            )
            and (f["since"] is None or m.created_at >= f["since"])
            and (f["until"] is None or m.created_at < f["until"])
        ]
        got = [m.id for m in await store.messages(limit=100, **f)]
        assert got == expected, f
        # Page by 4 with the cursor of each page's last message.
        pages: list[str] = []
        before = None
        while True:
            page = await store.messages(limit=4, before=before, **f)
            pages += [m.id for m in page]
            if len(page) < 4:
                break
            before = (page[-1].created_at, page[-1].id)
        assert pages == expected, f


async def test_a_message_replacing_another_of_its_step_takes_its_history_away(
    store: Store,
) -> None:
    await save(store, T0, msg("m1", "u1"))
    await save(store, T0 + 1, msg("m2", "u1", status="skipped", reason="no_address"))
    assert await store.message_history("m1") == []
    assert await store.message_history("m2") == [(T0, "skipped", "no_address")]
