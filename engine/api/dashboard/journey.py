"""The journey diagram of a rule page: the rule's program drawn as inline SVG, top to
bottom (trigger, steps, end), an `if` or a `wait_for` with its two ways side by side, and
on each step the numbers of the chosen range. Our own few lines: no script; every word is
a real SVG <text>, every step a <g> with a <title> (its whole text) and data-* attributes
with its numbers (what the tests compare with /v1/stats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from engine.api.dashboard.journey_tree import Node, Numbers, build
from engine.lang.rules import Rule
from engine.measure.svg import INK, MUTED, _count

NODE_W = 360
GAP_Y = 34  # between steps
GAP_X = 28  # between the ways of a branch
EMPTY_W = 120  # a way without steps
LINE_H = 16
PAD = 9
WAY_H = 26  # room above a way's first step for its label
SIDE_W = 250  # the goal / exits panel
CHARS = 55  # of a 12px line in a node
TITLE_CHARS = 44  # of a 13px bold one
LINE = "#8a96a3"
FILLS = {
    "trigger": "#e8f0fa",
    "wait": "#f4f4f4",
    "wait_for": "#fff4e0",
    "if": "#fff4e0",
    "send": "#e9f5ea",
    "stop": "#f4f4f4",
    "end": "#f4f4f4",
    "side": "#fbeff2",
}
WAYS = {"then": "then", "else": "else", "event": "on event", "timeout": "on timeout"}


@dataclass
class Block:
    """A drawn part: its size and its SVG (coordinates from its own top left)."""

    w: float
    h: float
    svg: str


def _f(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _cut(text: str, limit: int = CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, limit: int) -> list[str]:
    """At most two lines of at most `limit` characters, broken at a space."""
    if len(text) <= limit:
        return [text]
    cut = text.rfind(" ", 0, limit + 1)
    if cut <= limit // 2:
        cut = limit
    return [text[:cut].rstrip(), _cut(text[cut:].strip(), limit)]


def _at(x: float, y: float, block: Block) -> str:
    return f'<g transform="translate({_f(x)},{_f(y)})">{block.svg}</g>'


def _ended(ended: dict[str, int]) -> str:
    return ", ".join(f"{k} {_count(v)}" for k, v in sorted(ended.items()) if v)


def _lines(node: Node) -> list[tuple[str, str]]:
    """(style, text) of each line: title, details, numbers."""
    n: Numbers = node.numbers
    out = [("title", part) for part in _wrap(node.name, TITLE_CHARS)]
    out += [("detail", d) for d in node.details]
    if node.kind == "trigger":
        out.append(("num", f"started {_count(n.reached)}"))
    elif node.kind == "end":
        out.append(("num", f"completed {_count(n.reached)}"))
    else:
        out.append(("num", f"reached {_count(n.reached)}"))
    for channel, c in n.channels.items():
        head = f"{channel}: {_count(c['sends'])} sent · {_count(c['delivered'])} delivered"
        tail = f"{_count(c['opened'])} opened · {_count(c['clicked'])} clicked"
        if len(head) + len(tail) + 3 <= CHARS:
            out.append(("num", f"{head} · {tail}"))
        else:  # on two lines rather than cut
            out += [("num", head), ("more", tail)]
    if n.skips:
        reasons = ", ".join(f"{k} {_count(v)}" for k, v in sorted(n.skips.items()))
        out.append(("num", f"skipped {_count(sum(n.skips.values()))}: {reasons}"))
    orders = sum(c["converted"] for c in n.channels.values())
    if orders:
        out.append(("num", f"orders attributed {_count(orders)}"))
    if n.variants:
        out.append(
            ("num", " · ".join(f"{v} {_count(k)} sent" for v, k in sorted(n.variants.items())))
        )
    ended = {k: v for k, v in n.ended.items() if not (node.kind == "end" and k == "completed")}
    if _ended(ended):
        out.append(("num", f"ended here: {_ended(ended)}"))
    if node.kind != "end":
        out.append(("num", f"converted from here on {_count(n.converted_after)}"))
    return out


def _node(node: Node) -> Block:
    lines = _lines(node)
    h = PAD * 2 + LINE_H * len(lines) - 2
    n = node.numbers
    sends = sum(c["sends"] for c in n.channels.values())
    title = "\n".join([node.name, *(text for style, text in lines if style != "title")])
    parts = [
        f'<g class="jnode jnode-{node.kind}" data-step="{escape(node.path)}" '
        f'data-reached="{n.reached}" data-sends="{sends}" '
        f'data-skipped="{sum(n.skips.values())}" '
        f'data-converted-after="{n.converted_after}">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{NODE_W}" height="{h}" rx="6" fill="{FILLS.get(node.kind, "#fff")}" '
        f'stroke="{LINE}"/>'
    ]
    for i, (style, text) in enumerate(lines):
        y = PAD + LINE_H * (i + 1) - 4
        if style == "title":
            attrs, limit = f'font-size="13" font-weight="bold" fill="{INK}"', TITLE_CHARS
        elif style == "detail":
            attrs, limit = f'font-size="11" fill="{MUTED}"', CHARS + 6
        else:
            attrs, limit = f'font-size="12" fill="{INK}"', CHARS
        x = PAD + 1 + (14 if style == "more" else 0)  # a line's second part, indented
        parts.append(f'<text x="{x}" y="{y}" {attrs}>{escape(_cut(text, limit))}</text>')
    parts.append("</g>")
    return Block(NODE_W, h, "".join(parts))


def _down(x: float, y1: float, y2: float, arrow: bool = True) -> str:
    end = ' marker-end="url(#jarrow)"' if arrow else ""
    return (
        f'<line x1="{_f(x)}" y1="{_f(y1)}" x2="{_f(x)}" y2="{_f(y2)}" stroke="{LINE}" '
        f'stroke-width="1.5"{end}/>'
    )


def _sequence(nodes: list[Node]) -> Block:
    blocks = [_step(n) for n in nodes]
    if not blocks:
        return Block(EMPTY_W, 0, "")
    w = max(b.w for b in blocks)
    parts, y = [], 0.0
    for i, b in enumerate(blocks):
        if i:
            parts.append(_down(w / 2, y - GAP_Y, y - 2))
        parts.append(_at((w - b.w) / 2, y, b))
        y += b.h + GAP_Y
    return Block(w, y - GAP_Y, "".join(parts))


def _step(node: Node) -> Block:
    box = _node(node)
    if not node.branches:
        return box
    cols = [_sequence(b.steps) for b in node.branches]
    widths = [max(c.w, EMPTY_W) for c in cols]
    total = sum(widths) + GAP_X * (len(cols) - 1)
    w = max(NODE_W, total)
    top = box.h + GAP_Y + WAY_H
    bottom = top + max(c.h for c in cols) + GAP_Y / 2
    parts = [_at((w - NODE_W) / 2, 0, box)]
    x = (w - total) / 2
    fork = box.h + 10
    for branch, col, cw in zip(node.branches, cols, widths, strict=True):
        cx = x + cw / 2
        count = node.numbers.edges.get(branch.way, 0)
        label = f"{WAYS.get(branch.way, branch.way)} · {_count(count)}"
        parts.append(
            f'<g class="jedge" data-step="{escape(node.path)}" data-way="{branch.way}" '
            f'data-n="{count}"><title>{escape(node.name)}: {escape(label)}</title>'
            f'<polyline points="{_f(w / 2)},{_f(box.h)} {_f(w / 2)},{_f(fork)} '
            f'{_f(cx)},{_f(fork)} {_f(cx)},{_f(top - 2)}" fill="none" stroke="{LINE}" '
            f'stroke-width="1.5" marker-end="url(#jarrow)"/>'
            f'<text x="{_f(cx + 5)}" y="{_f(fork + 16)}" font-size="12" fill="{INK}">'
            f"{escape(label)}</text></g>"
        )
        parts.append(_at(x + (cw - col.w) / 2, top, col))
        parts.append(
            f'<polyline points="{_f(cx)},{_f(top + col.h)} {_f(cx)},{_f(bottom)} '
            f'{_f(w / 2)},{_f(bottom)}" fill="none" stroke="{LINE}" stroke-width="1.5"/>'
        )
        x += cw + GAP_X
    return Block(w, bottom, "".join(parts))


def _side(rule: Rule, total: Numbers, ended: dict[str, int]) -> Block:
    lines: list[tuple[str, str]] = []
    for goal in rule.goals:
        cond = f" if {goal.cond.source}" if goal.cond is not None else ""
        lines.append(("detail", f"goal: {goal.event}{cond}"))
    if rule.goals:
        lines.append(("num", f"converted {_count(ended.get('converted', 0))}"))
    for exit_ in rule.exits:
        cond = f" if {exit_.cond.source}" if exit_.cond is not None else ""
        lines.append(("detail", f"exit on: {exit_.event}{cond}"))
    if rule.exits:
        lines.append(("num", f"exited {_count(ended.get('exited', 0))}"))
    others = {k: v for k, v in ended.items() if k not in ("converted", "exited") and v}
    if others:
        lines.append(("num", "other ends: " + _ended(others)))
    if not lines:
        lines.append(("detail", "no goal, no exit_on"))
    h = PAD * 2 + LINE_H * (len(lines) + 1) - 2
    title = "Goal and exits\n" + "\n".join(t for _, t in lines)
    parts = [
        f'<g class="jnode jnode-side" data-converted="{ended.get("converted", 0)}" '
        f'data-exited="{ended.get("exited", 0)}"><title>{escape(title)}</title>'
        f'<rect width="{SIDE_W}" height="{h}" rx="6" fill="{FILLS["side"]}" stroke="{LINE}"/>'
        f'<text x="{PAD + 1}" y="{PAD + LINE_H - 4}" font-size="13" font-weight="bold" '
        f'fill="{INK}">Goal and exits</text>'
    ]
    for i, (style, text) in enumerate(lines, 1):
        fill, size = (MUTED, 11) if style == "detail" else (INK, 12)
        parts.append(
            f'<text x="{PAD + 1}" y="{PAD + LINE_H * (i + 1) - 4}" font-size="{size}" '
            f'fill="{fill}">{escape(_cut(text, 38))}</text>'
        )
    parts.append("</g>")
    return Block(SIDE_W, h, "".join(parts))


def journey_svg(rule: Rule, stats: dict[str, Any] | None, label: str = "") -> Markup:
    """The rule's journey with the numbers of its stats row (None: no numbers)."""
    trigger, steps, end = build(rule, stats)
    flow = _sequence([trigger, *steps, end])
    ended: dict[str, int] = {}
    for row in (stats or {}).get("journey") or []:
        for k, v in (row.get("ended") or {}).items():
            ended[k] = ended.get(k, 0) + int(v)
    side = _side(rule, trigger.numbers, ended)
    margin = 8
    w = flow.w + GAP_X + SIDE_W + 2 * margin
    h = max(flow.h, side.h) + 2 * margin
    title = f"Journey of {rule.id}" + (f", {label}" if label else "")
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="journey" role="group" '
        f'aria-labelledby="journey-title" width="{_f(w)}" height="{_f(h)}" '
        f'viewBox="0 0 {_f(w)} {_f(h)}" font-family="system-ui, sans-serif">'
        f'<title id="journey-title">{escape(title)}</title>'
        '<defs><marker id="jarrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{LINE}"/>'
        "</marker></defs>"
        f"{_at(margin, margin, flow)}{_at(margin + flow.w + GAP_X, margin, side)}</svg>"
    )
