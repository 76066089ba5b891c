"""Message templates: one block per channel, compiled at load, rendered all-or-nothing."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.kinds import CHANNELS
from channels.segments import segments
from engine.errors import ExpressionError, LoadError, Problem
from engine.lang import budget
from engine.lang.expressions import TextTemplate, compile_structure
from engine.lang.typecheck import template_clashes
from engine.lang.validation import Checker
from engine.lang.yamlfile import YDict, read_text

# Per channel: allowed keys, required keys. Limits cite the provider docs (PROVIDERS.md).
CHANNEL_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "email": (
        frozenset({"subject", "html", "text", "from", "reply_to", "preheader"}),
        frozenset({"subject"}),
    ),
    "mobile_push": (frozenset({"title", "body", "url", "image", "data"}), frozenset({"body"})),
    "webpush": (frozenset({"title", "body", "url", "icon", "image", "tag"}), frozenset({"body"})),
    "sms": (frozenset({"text"}), frozenset({"text"})),
    "telegram": (frozenset({"text", "parse_mode", "disable_preview"}), frozenset({"text"})),
    "whatsapp": (frozenset({"name", "language", "params"}), frozenset({"name", "language"})),
    "webhook": (frozenset({"body"}), frozenset({"body"})),
}
TELEGRAM_MAX_CHARS = 4096  # Bot API sendMessage: 1-4096 characters after entity parsing
SMS_MAX_SEGMENTS = 10  # Twilio: messages over 10 segments are poorly delivered
PUSH_MAX_BYTES = 4096  # FCM HTTP v1 payload limit
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
        _check_limits(channel, out, self.path)
        return out


def _check_limits(channel: str, payload: dict[str, Any], path: str) -> None:
    if channel == "sms":
        count, encoding = segments(payload["text"])
        payload["segments"], payload["encoding"] = count, encoding
        if not payload["text"]:
            raise ExpressionError(f"{path}: sms.text rendered empty")
        if count > SMS_MAX_SEGMENTS:
            raise ExpressionError(
                f"{path}: sms.text is {count} {encoding} segments, over {SMS_MAX_SEGMENTS}"
            )
    elif channel == "telegram":
        if not 1 <= len(payload["text"]) <= TELEGRAM_MAX_CHARS:
            raise ExpressionError(
                f"{path}: telegram.text must be 1-{TELEGRAM_MAX_CHARS} characters, "
                f"rendered {len(payload['text'])}"
            )
    elif channel in ("mobile_push", "webpush"):
        size = len(str(payload).encode())
        if size > PUSH_MAX_BYTES:
            raise ExpressionError(f"{path}: {channel} payload is {size} bytes, over 4096")


def parse_template(
    doc: YDict, check: Checker, base_dir: Path | None, root: Path | None = None
) -> Template | None:
    """Validate and compile one template document; files it names are read from `base_dir`
    and must lie inside `root` (the rules directory; default `base_dir`)."""
    files = None if base_dir is None else _Files(base_dir, root or base_dir)
    allowed = {"template", "description", *CHANNEL_KEYS}
    check.keys(doc, allowed, what="template")
    name = check.string(doc.get("template"), doc.where("template"), "template")
    if name is None:
        return None
    tpl = Template(name=name, path=check.path, line=doc.pos[0])
    for channel in CHANNELS:
        if channel not in doc:
            continue
        block = check.mapping(doc[channel], doc.where(channel), f"template '{channel}' block")
        if block is None:
            continue
        keys, required = CHANNEL_KEYS[channel]
        check.keys(block, keys, required, what=f"'{channel}'")
        compiled: dict[str, Renderer] = {}
        for key, value in block.items():
            if key not in keys:
                continue
            fn = _compile_field(channel, key, value, block, check, files)
            if fn is not None:
                compiled[key] = fn
        if channel == "email" and not ({"html", "text"} & block.keys()):
            check.error(block.where(), "email needs 'html' or 'text' (or both)")
        tpl.blocks[channel] = compiled
    if not tpl.blocks:
        check.error(doc.where(), f"template '{name}' has no channel block ({', '.join(CHANNELS)})")
    return tpl


@dataclass(frozen=True)
class _Files:
    base_dir: Path  # where a template's file names are relative to
    root: Path  # the rules directory, which no file may leave


def _compile_field(
    channel: str, key: str, value: Any, block: YDict, check: Checker, files: _Files | None
) -> Renderer | None:
    pos = block.where(key)
    what = f"{channel}.{key}"
    if channel == "whatsapp" and key == "params":
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
    if (channel, key) in (("webhook", "body"), ("mobile_push", "data")):
        if not isinstance(value, dict | list):
            check.error(pos, f"{what} must be a mapping")
            return None
        return check.compile(pos, what, lambda: compile_structure(value))
    if channel == "telegram" and key == "parse_mode":
        mode = check.choice(value, pos, what, ("HTML", "MarkdownV2", "Markdown"))
        return None if mode is None else (lambda ctx: mode)
    if channel == "telegram" and key == "disable_preview":
        flag = bool(value)
        return lambda ctx: flag
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        check.error(pos, f"{what} must be text")
        return None
    text = str(value)
    if channel == "email" and key == "html":
        return _compile_html(text, pos, what, check, files)
    tpl = check.compile(pos, what, lambda: TextTemplate(text))
    if tpl is not None:
        _check_types(text, pos, what, check)
    if tpl is not None and tpl.constant is not None and channel == "sms":
        count, encoding = segments(tpl.constant)
        if count > SMS_MAX_SEGMENTS:
            check.error(pos, f"{what} is {count} {encoding} segments, over {SMS_MAX_SEGMENTS}")
    return None if tpl is None else tpl.render


def _compile_html(
    text: str, pos: tuple[int, int], what: str, check: Checker, files: _Files | None
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


def _check_types(text: str, pos: tuple[int, int], what: str, check: Checker) -> None:
    for message in template_clashes(text):
        check.error(pos, f"{what}: {message}")


def _template_line(message: str) -> int:
    marker = "template line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(")", 1)[0]
        if digits.isdigit():
            return int(digits)
    return 1
