"""Message templates: one block per channel, compiled at load, rendered all-or-nothing."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.kinds import ChannelKind, Field, LimitError, kind, kind_names, kinds
from engine.errors import ExpressionError, LoadError, Problem
from engine.lang import budget
from engine.lang.expressions import TextTemplate, compile_structure
from engine.lang.typecheck import template_clashes
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict, read_text

# What each channel's block holds and the limits a rendered message keeps are the channel
# kind's (channels/kinds): this module compiles a block by its fields' kinds.
Renderer = Callable[[Mapping[str, Any]], Any]


@dataclass
class Template:
    name: str
    path: str
    line: int
    blocks: dict[str, dict[str, Renderer]] = field(default_factory=dict)

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self.blocks)

    def render(self, channel: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """Every field of the channel's block, or ExpressionError: never half a message.

        One render budget (engine/lang/budget.py) for the whole message: its time and loop
        iterations are shared by the fields; the output limit holds for each field.
        """
        block = self.blocks[channel]

        def fields(ctx: Mapping[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, fn in block.items():
                try:
                    out[key] = fn(ctx)
                except ExpressionError as exc:
                    raise ExpressionError(f"{self.path}: {channel}.{key}: {exc}") from None
            return out

        out: dict[str, Any] = budget.run(fields, context)
        try:
            kind(channel).check_payload(out)
        except LimitError as exc:
            raise ExpressionError(f"{self.path}: {exc}") from None
        return out


def parse_template(
    doc: YDict, check: Checker, base_dir: Path | None, root: Path | None = None
) -> Template | None:
    """Validate and compile one template document; files it names are read from `base_dir`
    and must lie inside `root` (the rules directory; default `base_dir`)."""
    files = None if base_dir is None else _Files(base_dir, root or base_dir)
    known = kinds()
    allowed = {"template", "description", *(k.name for k in known)}
    check.keys(doc, allowed, what="template")
    name = check.string(doc.get("template"), doc.where("template"), "template")
    if name is None:
        return None
    tpl = Template(name=name, path=check.path, line=doc.pos[0])
    for channel in known:
        if channel.name in doc:
            block = _parse_block(doc, channel, check, files)
            if block is not None:
                tpl.blocks[channel.name] = block
    if not tpl.blocks:
        check.error(
            doc.where(), f"template '{name}' has no channel block ({', '.join(kind_names())})"
        )
    return tpl


def _parse_block(
    doc: YDict, channel: ChannelKind, check: Checker, files: _Files | None
) -> dict[str, Renderer] | None:
    block = check.mapping(
        doc[channel.name], doc.where(channel.name), f"template '{channel.name}' block"
    )
    if block is None:
        return None
    check.keys(block, channel.keys, channel.required, what=f"'{channel.name}'")
    compiled: dict[str, Renderer] = {}
    for key, value in block.items():
        spec = channel.fields.get(key)
        if spec is None:
            continue
        fn = _compile_field(channel, key, spec, value, block.where(key), check, files)
        if fn is not None:
            compiled[key] = fn
    if channel.needs_any and not (set(channel.needs_any) & block.keys()):
        wanted = " or ".join(f"'{k}'" for k in channel.needs_any)
        both = " (or both)" if len(channel.needs_any) == 2 else ""
        check.error(block.where(), f"{channel.name} needs {wanted}{both}")
    return compiled


@dataclass(frozen=True)
class _Files:
    base_dir: Path  # where a template's file names are relative to
    root: Path  # the rules directory, which no file may leave


def _compile_field(
    channel: ChannelKind,
    key: str,
    spec: Field,
    value: Any,
    pos: Pos,
    check: Checker,
    files: _Files | None,
) -> Renderer | None:
    what = f"{channel.name}.{key}"
    if spec.kind == "text_list":
        seq = check.sequence(value, pos, what)
        if seq is None:
            return None
        items = [
            check.compile(seq.where(i), f"{what}[{i}]", functools.partial(TextTemplate, str(v)))
            for i, v in enumerate(seq)
        ]
        if any(t is None for t in items):
            return None
        return lambda ctx: [t.render(ctx) for t in items if t is not None]
    if spec.kind == "mapping":
        if not isinstance(value, dict | list):
            check.error(pos, f"{what} must be a mapping")
            return None
        return check.compile(pos, what, lambda: compile_structure(value))
    if spec.kind == "choice":
        word = check.choice(value, pos, what, spec.choices)
        return None if word is None else (lambda ctx: word)
    if spec.kind == "flag":
        flag = bool(value)
        return lambda ctx: flag
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        check.error(pos, f"{what} must be text")
        return None
    text = str(value)
    if spec.kind == "html":
        return _compile_html(text, pos, what, check, files)
    tpl = check.compile(pos, what, lambda: TextTemplate(text))
    if tpl is None:
        return None
    _check_types(text, pos, what, check)
    if tpl.constant is not None:
        problem = channel.check_constant(key, tpl.constant)
        if problem is not None:
            check.error(pos, f"{what} {problem}")
    return tpl.render


def _compile_html(
    text: str, pos: Pos, what: str, check: Checker, files: _Files | None
) -> Renderer | None:
    looks_like_file = "\n" not in text and "{" not in text and text.endswith((".html", ".htm"))
    if looks_like_file and files is not None:
        file = files.base_dir / text
        # Symlinks resolved: a template renders files of the rules directory, nothing else.
        if not file.resolve().is_relative_to(files.root.resolve()):
            check.error(pos, f"{what}: file '{text}' is outside the rules directory")
            return None
        if not file.is_file():
            check.error(pos, f"{what}: file '{text}' not found beside the template")
            return None
        # The HTML file is named the way its template's YAML file is.
        shown = str(Path(check.path).parent / text)
        try:
            source = read_text(file, shown)
        except LoadError as exc:
            check.problems.extend(exc.problems)
            return None
        try:
            tpl = TextTemplate(source, html=True)
        except ValueError as exc:
            # Point at the HTML file itself, at the line Jinja reports.
            line = _template_line(str(exc))
            check.problems.append(Problem(shown, line, 1, f"{exc}"))
            return None
        return tpl.render
    html = check.compile(pos, what, lambda: TextTemplate(text, html=True))
    if html is None:
        return None
    _check_types(text, pos, what, check)
    return html.render


def _check_types(text: str, pos: Pos, what: str, check: Checker) -> None:
    for message in template_clashes(text):
        check.error(pos, f"{what}: {message}")


def _template_line(message: str) -> int:
    marker = "template line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(")", 1)[0]
        if digits.isdigit():
            return int(digits)
    return 1
