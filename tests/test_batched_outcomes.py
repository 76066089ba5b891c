"""The dispatcher's answers are stored in batches (issue 12): many answers at once cost one
transaction, each sender returns only once its own answer is stored, and a failed write
reaches every sender of the batch. On both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.core.changes import Changes
from engine.core.model import Message
from engine.runtime.answers import Answers
from engine.store import Store, open_store
from tests.pgdb import pg_schema

T0 = 1_795_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = await open_store(f"sqlite:///{tmp_path}/kaskad.db")
        yield opened
        await opened.close()
    else:
        async with pg_schema() as url:
            opened = await open_store(url)
            yield opened
            await opened.close()


def msg(n: int) -> Message:
    return Message(
        f"m{n:04d}",
        instance_id=f"i{n}",
        user_id=f"u{n}",
        step="1",
        rule_id="r1",
        channel="email",
        template="t",
        variant=None,
        category="marketing",
        status="queued",
        created_at=T0,
    )


async def queued(store: Store, n: int) -> list[Message]:
    await store.save(Changes(messages={m.id: m for m in map(msg, range(n))}))
    return await store.claim_queued(T0 + 1, n)


async def test_record_outcomes_stores_each_answer_of_messages_in_flight(store: Store) -> None:
    claimed = await queued(store, 3)
    await store.record_outcomes(
        [
            (claimed[0].id, '{"kind":"accepted"}'),
            (claimed[2].id, '{"kind":"rejected"}'),
            ("m9999", '{"kind":"accepted"}'),  # not in flight: ignored
        ]
    )
    assert sorted(await store.answered()) == [
        ("m0000", "u0", '{"kind":"accepted"}'),
        ("m0002", "u2", '{"kind":"rejected"}'),
    ]
    await store.record_outcomes([])
    assert len(await store.answered()) == 2


class CountingStore:
    """The real store, with its batch writes counted."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []

    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        self.batches.append(len(answers))
        await self.store.record_outcomes(answers)


async def test_answers_at_once_are_one_transaction_and_each_sender_waits_for_its_own(
    store: Store,
) -> None:
    claimed = await queued(store, 300)
    counting = CountingStore(store)
    answers = Answers(counting)  # type: ignore[arg-type]
    await asyncio.gather(*(answers.record(m.id, '{"kind":"accepted"}') for m in claimed))
    # Every sender returned: every answer is stored, in far fewer writes than answers.
    assert len(await store.answered()) == 300
    assert sum(counting.batches) == 300
    assert len(counting.batches) <= 2
    # A lone answer later is written at once, alone.
    await answers.record("m0000", '{"kind":"accepted"}')
    assert counting.batches[-1] == 1


async def test_a_failed_batch_reaches_every_sender(store: Store) -> None:
    claimed = await queued(store, 5)
    answers = Answers(store)
    await store.close()
    results = await asyncio.gather(
        *(answers.record(m.id, '{"kind":"accepted"}') for m in claimed), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
