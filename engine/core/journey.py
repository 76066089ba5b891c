"""What the journey view counts (table journey_counts, one row per rule, step, edge and
hour, added to in the transaction that saves the instance; engine/measure/journey.py reads
them). The step is an op's path; "" is the rule itself (its trigger, and the end after its
last step)."""

from __future__ import annotations

START = "start"  # step "": an instance started
REACHED = "reached"  # an instance came to the step
THEN, ELSE = "then", "else"  # an `if` went this way
EVENT, TIMEOUT = "event", "timeout"  # a `wait_for` went on by its event or its timeout
END = "end:"  # + status: an instance ended while at the step (goal: end:converted)
EDGES = (START, REACHED, THEN, ELSE, EVENT, TIMEOUT)
