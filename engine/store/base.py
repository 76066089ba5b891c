"""The store interface: bulk loads and one-transaction saves of a unit of work."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from engine.core.changes import Changes, Order
from engine.core.model import Instance, Message, UserState
from engine.store.controls import AuditRow, RuleControl
from engine.store.user_log import LoggedEvent


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """What a stats read covers: [since, until) on each row's own time, one rule or all, and
    the attribution policy (touch = click | open | send, window in seconds)."""

    since: float
    until: float
    rule: str | None
    touch: str
    window_s: float


# Rows of the stats reads (plain tuples: they come straight from GROUP BY queries).
# (rule, step, channel, variant, status, reason, messages, sends, delivered, opened, clicked)
MessageCounts = tuple[str, str, str | None, str | None, str, str | None, int, int, int, int, int]
# (rule, step, channel, variant, attributed orders, their revenue)
AttributedCounts = tuple[str, str, str | None, str | None, int, float]
# (rule, variant, users assigned, users who clicked, users with an attributed order)
VariantCounts = tuple[str, str, int, int, int]
# (source, orders, revenue, attributed orders, attributed revenue)
OrderCounts = tuple[str, int, float, int, float]
# (rule, group "treatment" | "holdout", users, users whose instance the goal ended, users
# with an order within the attribution window after an instance start, those orders' revenue)
HoldoutCounts = tuple[str, str, int, int, int, float]
# Trend rows (engine.store.trends_sql), per bucket start (unix seconds, UTC): '' for a
# missing channel/variant/currency. (bucket, rule, channel, variant, messages, sends,
# skipped, failed, delivered, opened, clicked)
TrendMessages = tuple[int, str, str, str, int, int, int, int, int, int, int]
# (bucket, touch or "all" for every order, rule, channel, variant, currency, orders, revenue)
TrendOrders = tuple[int, str, str, str, str, str, int, float]
# (group "treatment" | "holdout", users, users with an order within the window after their
# first instance start, those orders' revenue)
GlobalHoldoutCounts = tuple[str, int, int, float]
# (rule, step path, edge, count) of the journey view (engine/core/journey.py)
JourneyCounts = tuple[str, str, str, int]
# (user id, recency score, frequency score, monetary score, current rfm, current scores)
RfmRow = tuple[str, int, int, int, Any, Any]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What a page of the delivery log shows: each given value must match; `since` and
    `until` bound created_at as [since, until)."""

    user_id: str | None = None
    rule: str | None = None
    status: str | None = None
    channel: str | None = None
    reason: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    """A scheduled job: its next fire time, and the run in progress (run_at) if any."""

    name: str
    spec: str
    due_at: float | None
    run_at: float | None
    cursor: str | None


class Store(Protocol):
    # Why the last write (save, enqueue, write_probe) failed; None once one succeeds.
    write_error: str | None

    async def write_probe(self) -> None:
        """A small real write (a row of `secrets`): whether writes go through now."""
        ...

    @property
    def poll_s(self) -> float | None:
        """How often a looping processor looks for work other processes left in the store
        (a shared PostgreSQL: a replica's backlog, a dead one's claims); None when only
        this process writes it."""
        ...

    async def close(self) -> None: ...

    async def load_users(
        self, user_ids: list[str], *, messages_since: float, starts_since: float
    ) -> dict[str, UserState]:
        """Profiles, active instances, recent messages and recent starts of these users."""
        ...

    async def save(self, changes: Changes) -> None:
        """Write a unit of work atomically."""
        ...

    async def next_due(self) -> float | None: ...

    async def due_instances(self, until: float, limit: int) -> list[tuple[float, str, str]]:
        """(due_at, instance id, user id) of active instances due at or before `until`."""
        ...

    # -- scheduled jobs ----------------------------------------------------------------------

    async def plan_jobs(self, plans: dict[str, tuple[str, float | None]]) -> None:
        """Make the jobs table these jobs, name -> (spec, first due time): a job whose spec is
        unchanged keeps its due time and any run; others are replaced; the rest removed."""
        ...

    async def due_jobs(self, now: float) -> list[JobRow]:
        """Jobs due at `now` and runs to resume (cut short, their claimer gone)."""
        ...

    async def start_job(self, name: str, due_at: float, next_due: float | None) -> bool:
        """Take the fire time `due_at` of a job (its run begins; due_at moves on to next_due);
        False when another replica took it first."""
        ...

    async def resume_job(self, name: str, run_at: float) -> bool:
        """Take over an unfinished run; False when another replica holds it."""
        ...

    async def next_job_due(self) -> float | None: ...

    async def interested_users(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        """Users interested in a product by any of the kinds, in user id order after `after`."""
        ...

    async def profile_ids(self, after: str, limit: int) -> list[str]: ...

    async def messages(
        self,
        *,
        user_id: str | None = None,
        rule: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        channel: str | None = None,
        reason: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Message]:
        """The delivery log, newest first (created_at, then id, descending), after the
        cursor `before` = (created_at, id) of the last message of the previous page; the
        filters as MessageFilter's. Each page reads one run of an index."""
        ...

    async def message_history(self, message_id: str) -> list[tuple[float, str, str | None]]:
        """(time, status, detail) of every status change of the message, in order:
        queued, skipped, sending, retry, sent, delivered, opened, clicked, failed, cancelled."""
        ...

    async def message(self, message_id: str) -> Message | None: ...

    async def message_by_provider_id(self, provider_id: str) -> Message | None:
        """The newest message a provider knows by this id (receipts name messages so)."""
        ...

    async def instances_of(self, user_id: str, limit: int = 200) -> list[Instance]: ...

    async def enqueue(
        self, events: list[tuple[str | None, str]], now: float, *, batch_key: str | None = None
    ) -> tuple[int, int]:
        """Durably store (id, JSON body) events not seen before; (accepted, duplicates).

        `batch_key` (e.g. "sig:" + a signature) is remembered with the event ids, in the same
        transaction as the events: a batch whose key was seen stores nothing and answers
        (0, len(events)), on every replica, until the retention job forgets it."""
        ...

    async def inbox_batch(self, limit: int) -> list[tuple[int, str, str | None]]:
        """The oldest acknowledged, unprocessed events: (seq, body, fan-out cursor)."""
        ...

    async def inbox_size(self) -> int: ...

    async def claim_queued(
        self,
        now: float,
        limit: int,
        *,
        skip: Collection[str] = (),
        only: str | None = None,
        queued_before: float | None = None,
    ) -> list[Message]:
        """Queued messages due for an attempt, marked as in flight. Those of the channels in
        `skip` stay queued (their provider is down); `only` claims one channel's messages
        (a probe); `queued_before` only those created at or before it (expired ones)."""
        ...

    async def release(self, message_ids: list[str]) -> None:
        """Messages claimed but never handed to their provider go back to the queue as they
        were (a stop)."""
        ...

    async def requeue_in_flight(self, keep: Collection[str] = ()) -> int:
        """Messages in flight here (but those in `keep`, whose sends are under way) or at a
        store that is gone go back to the queue: at start-up, what was in flight when the
        process died; later, a periodic sweep of what a failed write left in flight."""
        ...

    async def record_outcome(self, message_id: str, outcome: str) -> None:
        """Persist a provider's answer (JSON) before the engine applies it."""
        ...

    async def record_outcomes(self, answers: list[tuple[str, str]]) -> None:
        """record_outcome for each (message id, outcome JSON), in one transaction."""
        ...

    async def answered(self) -> list[tuple[str, str, str]]:
        """(message id, user id, outcome JSON) answered but not yet applied by the engine."""
        ...

    async def reschedule(
        self,
        message_id: str,
        attempts: int,
        next_attempt_at: float,
        detail: str,
        *,
        at: float | None = None,
    ) -> None:
        """Back to the queue after a failed attempt (or a paused channel), with a `retry`
        in its history at `at` (None: next_attempt_at)."""
        ...

    async def save_rule_version(
        self, version: str, rule_id: str, path: str, source: str, now: float
    ) -> None: ...

    async def rule_source(self, version: str) -> tuple[str, str] | None:
        """(path, source) of a rule version seen before."""
        ...

    async def active_versions(self) -> list[tuple[str, str]]:
        """(rule id, version) pairs that active instances use."""
        ...

    async def counts(self) -> dict[str, int]:
        """Gauges for /metrics: active instances, pending timers, queued messages, inbox."""
        ...

    async def forget_events_before(self, when: float) -> int: ...

    async def delete_messages_before(self, when: float, limit: int) -> int:
        """Delete up to `limit` messages created before `when` (those queued, in flight or
        with an answer not yet applied stay), and their history; how many went. Nothing else
        refers to a message by key (orders copy what they need)."""
        ...

    async def ping(self) -> None: ...

    async def secret(self, name: str) -> str:
        """The secret of this name, generated (32 random bytes) and kept on first use; every
        caller, replicas on one database too, gets the same value."""
        ...

    # -- segments (SPEC 12) -------------------------------------------------------------------

    async def segment_sizes(self, segment_ids: list[str]) -> dict[str, int]:
        """The current member count of each of these segments (0 for one without members)."""
        ...

    async def segment_users(
        self, segment_id: str, after: str, limit: int
    ) -> list[tuple[str, float]]:
        """(user id, member since) of a segment's members, in user id order after `after`."""
        ...

    # -- stats, orders, RFM ----------------------------------------------------------------

    async def stats_messages(self, q: StatsQuery) -> list[MessageCounts]:
        """Messages created in range, counted per rule, step, channel, variant, status, reason."""
        ...

    async def journey_counts(self, q: StatsQuery) -> list[JourneyCounts]:
        """How many instances reached each step and went each way in the hours of the range
        (the hour `since` falls in counts whole), per rule, step and edge."""
        ...

    async def stats_instances(self, q: StatsQuery) -> list[tuple[str, str, int]]:
        """(rule, status, count) of instances started in range."""
        ...

    async def stats_attributed(self, q: StatsQuery) -> list[AttributedCounts]:
        """Orders in range attributed (per the query's policy) to a message, per message row."""
        ...

    async def stats_variants(self, q: StatsQuery) -> list[VariantCounts]:
        """A/B cohorts: users whose instance got a variant in range, and of them those who
        clicked a message of that rule and those with an order attributed to one (any time)."""
        ...

    async def stats_orders(self, q: StatsQuery) -> list[OrderCounts]:
        """Orders in range per source, with the attributed part (the rule filter is ignored)."""
        ...

    async def trend_messages(
        self, since: float, until: float, rule: str | None, bucket: int, detail: bool = True
    ) -> list[TrendMessages]:
        """Messages created in [since, until) (widened to whole hours), summed per `bucket`
        seconds; without detail per rule only (channel and variant '')."""
        ...

    async def trend_orders(
        self,
        since: float,
        until: float,
        rule: str | None,
        touch: str,
        window_s: float,
        bucket: int,
        detail: bool = True,
    ) -> list[TrendOrders]:
        """Orders placed in [since, until) (widened to whole hours) per `bucket` seconds: all
        of them (touch "all") and those attributed to a message by `touch` within
        `window_s`; without detail per rule only."""
        ...

    async def instance_rules(self) -> list[str]:
        """Every rule id that has an instance (of any time), in id order."""
        ...

    async def instance_errors(self, since: float, until: float) -> dict[str, int]:
        """Per rule, its instances started in [since, until) that bad data stopped."""
        ...

    async def stats_holdout(self, q: StatsQuery, rules: Collection[str]) -> list[HoldoutCounts]:
        """A rule's control group against the rest (SPEC 12): per rule among `rules` and any
        rule with an instance held out in range, the users whose instance started in range
        outside any holdout (treatment) and in the rule's holdout. Revenue sums the orders
        placed after an instance start, within the window, each order once."""
        ...

    async def stats_global_holdout(
        self, q: StatsQuery, rules: Collection[str]
    ) -> list[GlobalHoldoutCounts]:
        """The global holdout against everyone else, over the instances of `rules` (the
        marketing rules) started in range that no rule holdout held out: a user in it has
        such an instance held out globally. Orders count after the user's first start."""
        ...

    async def orders_of(self, user_id: str, limit: int = 200) -> list[Order]:
        """The user's orders, newest first."""
        ...

    async def rfm_scores(self) -> list[RfmRow]:
        """Recency, frequency and monetary quintile scores (1-5) of every profile with orders."""
        ...

    async def set_rfm(self, segments: dict[str, tuple[str, dict[str, int]]]) -> None:
        """Set `rfm` and `rfm_scores` (user id -> (segment, scores)) on these profiles in
        place, the rest of each as it is, in a transaction of its own: so `kaskad rfm` can
        write beside a daemon running on the same database without overwriting what it
        saves. Users without a profile are skipped."""
        ...

    # -- the dashboard's users: search index and event log (issue 13) -----------------------

    async def find_users(self, kind: str, value: str, limit: int = 20) -> list[str]:
        """Users whose profile holds this address (kind and key of core/addresses)."""
        ...

    async def user_events(
        self, user_id: str, *, types: Collection[str] = (), limit: int = 200
    ) -> list[LoggedEvent]:
        """The user's own logged events (of these types, when given), newest first."""
        ...

    async def forget_user_events_before(self, when: float) -> int:
        """Drop logged events older than `when` (storage.event_retention); how many went."""

    # -- actions by hand (issue 13: store/sqlite_controls.py, postgres_controls.py) ---------

    async def rule_controls(self) -> dict[str, RuleControl]:
        """Every rule's pause as last set by hand (resumed ones too), by rule id."""
        ...

    async def set_rule_control(self, control: RuleControl, action: str, detail: str) -> None:
        """Pause or resume a rule, and its audit row, in one transaction; a hold it ends
        moves the rule's timers due by then on by the time they spent held (controls.py)."""
        ...

    async def record_audit(self, row: AuditRow) -> None: ...

    async def audit(self, target: str | None = None, limit: int = 100) -> list[AuditRow]:
        """The newest actions first; `target`: those on one rule (its instances' ends
        too), one instance or one template."""
        ...

    async def end_session(self, session: str, expires_at: float, now: float) -> None:
        """Note a dashboard session ended (by logout) until `expires_at`, when its cookie
        expires anyway; forget those ended before `now`."""
        ...

    async def ended_sessions(self, now: float) -> set[str]:
        """The dashboard sessions ended by logout whose cookies have not expired yet."""
        ...

    async def instance_owner(self, instance_id: str) -> tuple[str, str, str] | None:
        """(user id, rule id, status) of an instance, None for an unknown one."""
        ...


def new_secret() -> str:
    """32 random bytes, hex: a value for Store.secret to keep."""
    return secrets.token_hex(32)


class ConcurrentUpdate(RuntimeError):
    """Another replica changed what this unit of work read: nothing was written; retry."""
