"""A/B variants of a send step: the stable split and what each variant replaces."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from engine.core.model import Instance
from engine.lang.program import CascadeEntry, SendOp, Variant
from engine.lang.templates import Template

Choice = tuple[str | None, str | None, tuple[CascadeEntry, ...]]  # (name, template, cascade)


def choose(
    op: SendOp, inst: Instance, eligible: Callable[[Variant], bool] | None = None
) -> Choice | None:
    """The user's variant of the step: the same user always gets the same one of a rule,
    among the variants whose `audience` holds for them (`eligible` tests it; without it only
    variants without an audience qualify, unless the instance chose one before). None when
    no variant is for this user (`no_variant`)."""
    if not op.variants:
        return None, None, op.cascade
    if inst.variant is not None:
        for variant in op.variants:
            if variant.name == inst.variant:
                return variant.name, variant.template, variant.cascade or op.cascade
    candidates = [
        v for v in op.variants if v.audience is None or (eligible is not None and eligible(v))
    ]
    total = sum(v.weight for v in candidates)
    if not candidates or total <= 0:
        return None
    digest = hashlib.sha256(f"{inst.rule_id}:{inst.user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    chosen = candidates[-1]
    for variant in candidates:
        if point < variant.weight:
            chosen = variant
            break
        point -= variant.weight
    return chosen.name, chosen.template, chosen.cascade or op.cascade


def in_share(key: str, pct: float) -> bool:
    """Whether `key` falls in a stable `pct` percent of all keys (holdouts)."""
    if pct <= 0:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < pct


def cascade_of(op: SendOp, inst: Instance) -> tuple[CascadeEntry, ...]:
    """The cascade the instance's variant of the step walks (once it has chosen)."""
    choice = choose(op, inst)
    return op.cascade if choice is None else choice[2]


def template_for(
    templates: dict[str, Template],
    op: SendOp,
    entry: CascadeEntry,
    variant_template: str | None,
) -> str | None:
    """A variant's template replaces the step's on every channel it has a block for."""
    if variant_template is not None:
        replacement = templates.get(variant_template)
        if replacement is not None and entry.channel in replacement.channels:
            return variant_template
    return entry.template or op.template
