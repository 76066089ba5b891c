"""The running rule set: loaded at start, reloaded when files change (watchfiles).

A rule or template whose new file is invalid keeps its previous version running; the error
is reported (log, /v1/rules, metric). Running instances keep the version they started on,
also across restarts: every version's source is kept in the store.

A template whose file is deleted while a rule version still names it (a running instance
of an older version, or a rule kept at its previous version) stays loaded at its last
version, so those instances still render; each such use is reported (log `rules.
template_deleted_in_use`, the rule's errors in /v1/rules). Templates are not kept in the
store: after a restart a deleted template is gone, and its sends are skipped as
`not_in_template`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from engine.clock import iso
from engine.errors import Problem
from engine.lang.rules import Rule, parse_rule
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.lang.validation import Checker
from engine.lang.yamlfile import YDict, load_yaml
from engine.store.base import Store
from engine.store.controls import RuleControl

log = structlog.get_logger("kaskad.rules")


class RuleManager:
    def __init__(self, path: Path, store: Store, now: Callable[[], float]) -> None:
        self.path = path
        self.store = store
        self.now = now
        self.current = RuleSet()
        self.listeners: list[Callable[[RuleSet], None]] = []
        self.loaded_at = 0.0
        # The rules paused by hand (the processor's last read of them), for describe().
        self.controls: Callable[[], dict[str, RuleControl]] = dict

    def _merge(self, new: RuleSet) -> RuleSet:
        """Keep the previous version of any rule or template whose file is now broken."""
        old = self.current
        broken_files = {p.path for p in new.problems}
        for rid, rule in old.rules.items():
            if rid not in new.rules and (rid in new.failed or rule.path in broken_files):
                new.rules[rid] = rule
        for name, tpl in old.templates.items():
            if name not in new.templates and tpl.path in broken_files:
                new.templates[name] = tpl
        new.scheduled = []
        new.index()
        return new

    async def load(self) -> RuleSet:
        new = await asyncio.to_thread(load_ruleset, [self.path])
        merged = self._merge(new)
        await self._keep_deleted_templates(merged)
        for problem in merged.problems:
            log.error("rules.invalid", problem=str(problem))
        for rule in merged.rules.values():
            source = await asyncio.to_thread(_read, rule.path)
            if source is not None:
                await self.store.save_rule_version(
                    rule.version, rule.id, rule.path, source, self.now()
                )
        self.current = merged
        self.loaded_at = self.now()
        for listener in self.listeners:
            listener(merged)
        log.info(
            "rules.loaded",
            rules=len(merged.rules),
            templates=len(merged.templates),
            segments=len(merged.segments),
            problems=len(merged.problems),
        )
        return merged

    async def _keep_deleted_templates(self, merged: RuleSet) -> None:
        """Templates gone from the files stay for the rule versions that still name them."""
        gone = {n: t for n, t in self.current.templates.items() if n not in merged.templates}
        if not gone:
            return
        active = set(await self.store.active_versions())
        users: dict[str, list[Rule]] = {}
        for rule in [*merged.rules.values(), *await self._versions(merged, active)]:
            for name in sorted(rule.templates & gone.keys()):
                users.setdefault(name, []).append(rule)
        for name, rules in users.items():
            template = gone[name]
            merged.templates[name] = template
            running = [r for r in rules if (r.id, r.version) in active]
            log.warning(
                "rules.template_deleted_in_use",
                template=name,
                path=template.path,
                used_by=[f"{r.id}@{r.version}" for r in rules],
                running=[f"{r.id}@{r.version}" for r in running],
            )
            for rule in running:
                problem = Problem(
                    template.path,
                    template.line,
                    1,
                    f"template '{name}' was deleted, but running instances of rule "
                    f"'{rule.id}' (version {rule.version}) still use it: its last loaded "
                    "version is kept for them until the daemon restarts",
                )
                merged.notes.setdefault(rule.id, []).append(problem)
                merged.problems.append(problem)
        merged.problems.sort()

    async def old_versions(self) -> list[Rule]:
        """Rules at the versions active instances started on, when no longer current."""
        return await self._versions(self.current, set(await self.store.active_versions()))

    async def _versions(self, current: RuleSet, active: set[tuple[str, str]]) -> list[Rule]:
        """The rules at `active` versions that are not in `current`, read from the store."""
        loaded = {(r.id, r.version) for r in current.rules.values()}
        out = []
        for rule_id, version in sorted(active):
            if (rule_id, version) in loaded:
                continue
            found = await self.store.rule_source(version)
            if found is None:
                continue
            path, source = found
            try:
                doc = load_yaml(source, path)
            except Exception:
                continue
            if isinstance(doc, YDict):
                rule = parse_rule(doc, Checker(path), source)
                if rule is not None and rule.version == version:
                    out.append(rule)
        return out

    async def watch(self) -> None:
        from watchfiles import awatch

        async for _changes in awatch(self.path, debounce=300, recursive=True):
            try:
                await self.load()
            except Exception:
                log.exception("rules.reload_failed")

    def describe(self) -> dict[str, Any]:
        rs = self.current
        by_file: dict[str, list[Problem]] = {}
        for problem in rs.problems:
            by_file.setdefault(problem.path, []).append(problem)
        rules = []
        controls = self.controls()
        for rule in sorted(rs.rules.values(), key=lambda r: r.id):
            trigger = rule.trigger
            errors = [str(p) for p in by_file.get(rule.path, [])]
            notes = [str(p) for p in rs.notes.get(rule.id, [])]
            rules.append(
                {
                    "id": rule.id,
                    "path": rule.path,
                    "version": rule.version,
                    "description": rule.description,
                    "category": rule.category,
                    "mode": rule.mode,
                    "trigger": (
                        {"schedule": {"at": iso(trigger.at)}}
                        if trigger.at is not None
                        else {"schedule": trigger.schedule, "timezone": trigger.timezone}
                        if trigger.schedule
                        else {"event": trigger.event, "fan_out": list(trigger.fan_out)}
                    ),
                    "channels": sorted(rule.channels),
                    "templates": sorted(rule.templates),
                    # "stale": a newer file version is broken, this one keeps running
                    # (the states: engine.measure.stats.RULE_STATES)
                    "state": "paused"
                    if rule.id in controls and controls[rule.id].paused
                    else "stale"
                    if errors
                    else "active",
                    "paused": paused_json(controls.get(rule.id)),
                    "errors": errors + notes,
                }
            )
        for rid, problems in sorted(rs.failed.items()):
            if rid not in rs.rules:
                rules.append(
                    {
                        "id": rid,
                        "path": problems[0].path,
                        "state": "invalid",
                        "errors": [str(p) for p in problems],
                    }
                )
        return {
            "rules": rules,
            "templates": sorted(rs.templates),
            "problems": [str(p) for p in rs.problems],
            "loaded_at": self.loaded_at,
        }


def paused_json(control: RuleControl | None) -> dict[str, Any] | None:
    """A paused rule's pause: whether its running instances are held, by whom, since."""
    if control is None or not control.paused:
        return None
    return {"hold": control.hold, "by": control.by, "at": iso(control.at)}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
