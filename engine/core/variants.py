"""A/B variants of a send step: the stable split and what each variant replaces."""

from __future__ import annotations

import hashlib

from engine.core.model import Instance
from engine.lang.program import CascadeEntry, SendOp
from engine.lang.templates import Template

Choice = tuple[str | None, str | None, tuple[CascadeEntry, ...]]  # (name, template, cascade)


def choose(op: SendOp, inst: Instance) -> Choice:
    """The user's variant of the step: the same user always gets the same one of a rule."""
    if not op.variants:
        return None, None, op.cascade
    digest = hashlib.sha256(f"{inst.rule_id}:{inst.user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in op.variants)
    chosen = op.variants[-1]
    for variant in op.variants:
        if point < variant.weight:
            chosen = variant
            break
        point -= variant.weight
    return chosen.name, chosen.template, chosen.cascade or op.cascade


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
