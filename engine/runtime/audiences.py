"""Rules that start for many users at once: a product event fans out to the users
interested in the product, a broadcast runs for every profile its audience matches. Both go
a page of users per unit of work, their progress committed with each page."""

from __future__ import annotations

import structlog

from engine.clock import iso
from engine.core.changes import JobProgress
from engine.core.workspace import Workspace
from engine.lang.events import Event
from engine.lang.rules import Rule
from engine.runtime.units import Units
from engine.store.base import JobRow

log = structlog.get_logger("kaskad.processor")

PAGE = 500  # users per unit of work
VIEWED_S = 30 * 86400  # a view counts as interest this long (SPEC 2)


async def fan_out(units: Units, seq: int | None, event: Event, cursor: str | None) -> None:
    """One instance per interested user of each fan-out rule of the event's type. With an
    inbox row (`seq`), the progress is written with each page, so a crash resumes after the
    last one, and the row is done with the last."""
    engine, states = units.engine, units.states
    rules = engine.rules.fan_out.get(event.type, ())
    start_rule, _, start_user = (cursor or "").partition("\x1f")
    started = not start_rule
    product = str(event.data.get("product_id"))
    for rule in rules:
        if not started and rule.id != start_rule:
            continue
        after = start_user if not started else ""
        started = True
        while True:
            since = units.clock.now() - VIEWED_S
            users = await states.interested(product, rule.trigger.fan_out, since, after, PAGE)
            if not users:
                break
            ws = await units.workspace(users)

            def start(ws: Workspace = ws, users: list[str] = users, rule: Rule = rule) -> None:
                for uid in units.each(users):
                    engine.try_start(ws, rule, ws.users[uid], event.context)

            await units.work(ws, start)
            after = users[-1]
            if seq is not None:
                ws.changes.inbox_cursor = (seq, f"{rule.id}\x1f{after}")
            await units.commit(ws)
            if len(users) < PAGE:
                break
    if seq is not None:
        ws = Workspace(now=units.clock.now())
        ws.changes.inbox_done.append(seq)
        await units.commit(ws)


async def broadcast(units: Units, rule_id: str, run: JobRow) -> None:
    """A scheduled rule's run: every profile its audience matches gets an instance."""
    assert run.run_at is not None
    engine, states = units.engine, units.states
    rule = engine.rules.rules.get(rule_id)
    after = run.cursor or ""
    started = 0
    trigger = {
        "id": None,
        "type": "schedule",
        "user_id": None,
        "time": iso(run.run_at),
        "data": {"rule": rule_id},
    }
    while rule is not None:
        users = await states.profiles(after, PAGE)
        if not users:
            break
        ws = await units.workspace(users)

        def start(ws: Workspace = ws, users: list[str] = users, rule: Rule = rule) -> int:
            count = 0
            for uid in units.each(users):
                st = ws.users[uid]
                if engine.start_for_audience(ws, rule, st, {**trigger, "user_id": uid}):
                    count += 1
            return count

        started += await units.work(ws, start)
        after = users[-1]
        ws.changes.job = JobProgress(run.name, run.run_at, after)
        await units.commit(ws)
        if len(users) < PAGE:
            break
    log.info("broadcast.done", rule=rule_id, started=started)
