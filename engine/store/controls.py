"""Rows of the actions taken by hand (issue 13): a rule's pause, and the audit log."""

from __future__ import annotations

from dataclasses import dataclass

# The rules whose running instances are held: their timers and queued sends wait.
HELD_RULES = "SELECT rule_id FROM rule_controls WHERE paused = 1 AND hold = 1"

# Time spent held does not count toward policies.max_lateness. When a hold ends (a resume,
# or a pause without hold over a held one), in the transaction that ends it, each timer of
# the rule's running instances due by then moves on by the time it spent held: one that
# came due during the hold is due when the hold ended (it fires then, as if it came due
# then); one already late when the hold began keeps that lateness. Lateness after the hold
# counts as ever. Moved with the change of the pause, in the store, it holds for every
# replica at once: a timer of the rule is claimed either held (not at all) or moved, and a
# restart during the hold changes nothing (the hold's start is in the row). A unit of work
# in flight that loaded such an instance before and saves it after writes the due time the
# engine set for its new state, never the held one. Held sends keep their place in the
# queue: nothing judges their lateness.

# The row a pause replaces: (paused, hold, held_since, changed_at).
ControlRow = tuple[int, int, float | None, float]


@dataclass(frozen=True, slots=True)
class RuleControl:
    """A rule's pause as last set by hand: paused (no instance starts), hold (running
    instances wait too), who set it and when."""

    rule_id: str
    paused: bool
    hold: bool
    by: str
    at: float


def held_since(old: ControlRow | None, control: RuleControl) -> float | None:
    """When the hold `control` sets began: kept while a held rule stays held (a pause with
    hold repeated), `control.at` for a new hold, None without one."""
    if not control.hold:
        return None
    if old is not None and old[0] and old[1]:
        return old[2] if old[2] is not None else old[3]
    return control.at


# A rule's control written (both stores; `{}`: the six placeholders, in the order of
# control_values).
UPSERT_CONTROL = (
    "INSERT INTO rule_controls (rule_id, paused, hold, changed_by, changed_at, held_since) "
    "VALUES ({}) ON CONFLICT (rule_id) DO UPDATE SET "
    "paused = excluded.paused, hold = excluded.hold, "
    "changed_by = excluded.changed_by, changed_at = excluded.changed_at, "
    "held_since = excluded.held_since"
)


def control_values(old: ControlRow | None, control: RuleControl) -> tuple[object, ...]:
    """UPSERT_CONTROL's parameters: the control over the row it replaces (`old`)."""
    return (
        control.rule_id,
        int(control.paused),
        int(control.hold),
        control.by,
        control.at,
        held_since(old, control),
    )


def hold_ended(old: ControlRow | None, control: RuleControl) -> float | None:
    """When the hold that `control` ends began (no later than `control.at`: replicas'
    clocks may differ), None if it ends none."""
    if control.hold or old is None or not (old[0] and old[1]):
        return None
    since = old[2] if old[2] is not None else old[3]
    return min(since, control.at)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One action: when, who (account name), what (pause, resume, end_instance,
    test_send), on what (a rule id or a template), its detail (JSON), and for an action on
    an instance its id (the target is then its rule, whose page lists the action)."""

    at: float
    who: str
    action: str
    target: str
    detail: str
    instance_id: str | None = None
