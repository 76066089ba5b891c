"""Shared helpers for validating line-stamped YAML: each check records a located Problem."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from engine.errors import Problem, did_you_mean
from engine.lang.durations import parse_duration
from engine.lang.yamlfile import Pos, YDict, YList

T = TypeVar("T")


class Checker:
    """Collects problems for one file; helpers return None when a value is bad."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def error(self, pos: Pos, message: str) -> None:
        # A missing key was already reported where it is missing: not again as "nothing".
        if message.endswith("got nothing") and any(
            (p.line, p.col) == pos and "missing required key" in p.message for p in self.problems
        ):
            return
        self.problems.append(Problem(self.path, pos[0], pos[1], message))

    def keys(
        self,
        node: YDict,
        allowed: Collection[str],
        required: Collection[str] = (),
        what: str = "",
    ) -> bool:
        ok = True
        for key in node:
            if key not in allowed:
                where = f" in {what}" if what else ""
                self.error(
                    node.where(key, value=False),
                    f"unknown key '{key}'{where}{did_you_mean(key, allowed)}",
                )
                ok = False
        for key in required:
            if key not in node:
                where = f"{what} " if what else ""
                self.error(node.where(), f"{where}missing required key '{key}'")
                ok = False
        return ok

    def mapping(self, value: Any, pos: Pos, what: str) -> YDict | None:
        if isinstance(value, YDict):
            return value
        self.error(pos, f"{what} must be a mapping, got {_kind(value)}")
        return None

    def sequence(self, value: Any, pos: Pos, what: str) -> YList | None:
        if isinstance(value, YList):
            return value
        self.error(pos, f"{what} must be a list, got {_kind(value)}")
        return None

    def string(self, value: Any, pos: Pos, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.error(pos, f"{what} must be a non-empty string, got {_kind(value)}")
        return None

    def choice(self, value: Any, pos: Pos, what: str, choices: Collection[str]) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        self.error(pos, f"{what} must be one of {', '.join(choices)}, got '{value}'{hint}")
        return None

    def duration(self, value: Any, pos: Pos, what: str, *, negative: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except (ValueError, TypeError) as exc:
            self.error(pos, f"{what}: {exc}")
            return None
        if seconds < 0 and not negative:
            self.error(pos, f"{what} must not be negative, got '{value}'")
            return None
        return seconds

    def compile(self, pos: Pos, what: str, factory: Callable[[], T]) -> T | None:
        """Run a compiler (expression, template, cron...) and locate its ValueError."""
        try:
            return factory()
        except ValueError as exc:
            self.error(pos, f"{what}: {exc}")
            return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"a number ({value})"
    return f"'{value}'"
