"""Rows of the actions taken by hand (issue 13): a rule's pause, and the audit log."""

from __future__ import annotations

from dataclasses import dataclass

# The rules whose running instances are held: their timers and queued sends wait.
HELD_RULES = "SELECT rule_id FROM rule_controls WHERE paused = 1 AND hold = 1"


@dataclass(frozen=True, slots=True)
class RuleControl:
    """A rule's pause as last set by hand: paused (no instance starts), hold (running
    instances wait too), who set it and when."""

    rule_id: str
    paused: bool
    hold: bool
    by: str
    at: float


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
