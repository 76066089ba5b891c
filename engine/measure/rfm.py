"""RFM segments: recency, frequency and monetary quintiles of the customers with orders,
named after the common RFM segment table and stored on the profile (`user.rfm`).

Scores are 1-5 by rank among the n profiles with at least one order (recency from
`last_order_at`, frequency `orders_count`, monetary `revenue`): 1 + floor(5 * (r - 0.5) / n)
where r is the value's mid-rank, so equal values share a score and a lone customer (or a
population where everyone is alike) scores 3.
The segment is read from R and FM = round-half-up((F + M) / 2):

| R \\ FM | 1              | 2               | 3               | 4         | 5         |
|--------|----------------|-----------------|-----------------|-----------|-----------|
| 5      | new            | potential_loyal | potential_loyal | champions | champions |
| 4      | promising      | potential_loyal | potential_loyal | loyal     | loyal     |
| 3      | about_to_sleep | about_to_sleep  | need_attention  | loyal     | loyal     |
| 2      | hibernating    | hibernating     | at_risk         | at_risk   | cant_lose |
| 1      | lost           | hibernating     | at_risk         | at_risk   | cant_lose |

Profiles without orders keep whatever `rfm` the shop gave them. The profile also gets
`rfm_scores: {r, f, m}`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.core.workspace import Workspace
from engine.store.base import Store

log = structlog.get_logger("kaskad.rfm")

SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyal",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
    "lost",
)
BATCH = 500

# New segments and scores by user id, written in one go.
Segments = dict[str, tuple[str, dict[str, int]]]
Write = Callable[[Segments], Awaitable[Any]]
# Runs a function on a workspace holding these users and commits it (Processor.call).
Apply = Callable[[list[str], Callable[[Workspace], Any]], Awaitable[Any]]


def segment(r: int, f: int, m: int) -> str:
    """The segment name of 1-5 scores (the table in this module's docstring)."""
    fm = (f + m + 1) // 2
    if r <= 2:
        if r == 1 and fm == 1:
            return "lost"
        return ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose")[fm - 1]
    if r == 3:
        return ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal")[fm - 1]
    if fm >= 4:
        return "champions" if r == 5 else "loyal"
    if fm == 1:
        return "new" if r == 5 else "promising"
    return "potential_loyal"


@dataclass
class RfmResult:
    customers: int = 0  # profiles with orders
    changed: int = 0  # profiles whose segment or scores changed
    segments: dict[str, int] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"customers": self.customers, "changed": self.changed, "segments": self.segments}


async def recompute(store: Store, write: Write, *, batch: int = BATCH) -> RfmResult:
    """Score every customer in the store; write the profiles whose segment or scores
    changed, `batch` at a time."""
    rows = await store.rfm_scores()
    result = RfmResult(customers=len(rows))
    counts: Counter[str] = Counter()
    todo: Segments = {}
    for uid, r, f, m, current, current_scores in rows:
        name = segment(r, f, m)
        counts[name] += 1
        scores = {"r": r, "f": f, "m": m}
        if current != name or current_scores != scores:
            todo[uid] = (name, scores)
    result.segments = {name: counts[name] for name in SEGMENTS if counts[name]}
    users = sorted(todo)
    for start in range(0, len(users), batch):
        await write({uid: todo[uid] for uid in users[start : start + batch]})
        result.changed += min(batch, len(users) - start)
    log.info("rfm.done", **result.json())
    return result


def through(apply: Apply) -> Write:
    """Write through the engine's single writer (the daemon's Processor.call): the profile
    is changed in a unit of work like any event's, so no engine update is lost."""

    async def write(segments: Segments) -> None:
        def change(ws: Workspace) -> None:
            for uid, (name, scores) in segments.items():
                st = ws.users[uid]
                if st.profile_dirty:
                    continue  # erased since it was scored
                st.profile["rfm"], st.profile["rfm_scores"] = name, scores
                ws.save_profile(st)

        await apply(list(segments), change)

    return write


def resident(ws: Workspace) -> Write:
    """Write into a workspace that holds every user (simulate); its write-behind saves."""

    async def write(segments: Segments) -> None:
        for uid, (name, scores) in segments.items():
            st = ws.users.get(uid)
            if st is not None:
                st.profile["rfm"], st.profile["rfm_scores"] = name, scores
                ws.save_profile(st)

    return write


class RfmJob:
    """The recompute as the daemon runs it: nightly and on demand, never two at once."""

    def __init__(self, store: Store, write: Write) -> None:
        self.store = store
        self.write = write
        self._lock = asyncio.Lock()

    async def run(self) -> RfmResult:
        async with self._lock:
            return await recompute(self.store, self.write)
