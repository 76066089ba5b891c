"""YAML loading that stamps every mapping and list with file, line and column.

Validation errors then name the exact place: `rules/cart.yaml:6:5: unknown key 'delya'`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.reader import ReaderError

from engine.errors import LoadError, Problem

Pos = tuple[int, int]

# Rule, template and config files are small and flat. The limits keep a hostile or broken
# file from holding the loader (and a hot reload) for ever.
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64


class YDict(dict[str, Any]):
    """A mapping that remembers where it and each of its keys and values stand (1-based)."""

    path: str = "<string>"
    pos: Pos = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self.key_pos: dict[str, Pos] = {}
        self.value_pos: dict[str, Pos] = {}

    def where(self, key: str | None = None, *, value: bool = True) -> Pos:
        if key is None:
            return self.pos
        table = self.value_pos if value else self.key_pos
        return table.get(key, self.key_pos.get(key, self.pos))


class YList(list[Any]):
    path: str = "<string>"
    pos: Pos = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self.item_pos: list[Pos] = []

    def where(self, index: int | None = None) -> Pos:
        if index is None or index >= len(self.item_pos):
            return self.pos
        return self.item_pos[index]


def _pos(node: Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Refused(ComposerError):
    """A construct kaskad files do not allow; reported as it is, not as invalid YAML."""


def _refused(message: str, where: Any) -> _Refused:
    return _Refused(None, None, message, where.start_mark)


class _Loader(yaml.SafeLoader):
    source_path = "<string>"
    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # Refused here, as the parser's events arrive, before any node exists: a few hundred
        # bytes of nested aliases (the "billion laughs") stand for billions of values, and
        # whatever walks them (a description printed, a webhook body compiled) never ends.
        # Rule files need none of it.
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            raise _refused(
                f"YAML aliases (*{event.anchor}) are not allowed: write the value out", event
            )
        if getattr(event, "anchor", None) is not None:
            raise _refused(
                f"YAML anchors (&{event.anchor}) are not allowed: write the value out where it "
                "is used",
                event,
            )
        if self.depth >= MAX_DEPTH:
            raise _refused(f"nested deeper than {MAX_DEPTH} levels", event)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _refused(
                        "YAML merge keys (<<) are not allowed: write the keys out", key_node
                    )
        return node

    def construct_yaml_map(self, node: MappingNode) -> Any:
        data = YDict()
        data.path, data.pos = self.source_path, _pos(node)
        yield data
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in data:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            data[key] = self.construct_object(value_node, deep=True)
            data.key_pos[key] = _pos(key_node)
            data.value_pos[key] = _pos(value_node)

    def construct_yaml_seq(self, node: SequenceNode) -> Any:
        data = YList()
        data.path, data.pos = self.source_path, _pos(node)
        yield data
        for child in node.value:
            data.append(self.construct_object(child, deep=True))
            data.item_pos.append(_pos(child))


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)
# Times and dates stay strings: rule authors write "10:00" and ISO dates as text.
_Loader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str
)


_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)


def _resolver_without_sexagesimal() -> None:
    # YAML 1.1 reads 10:00 as the integer 600; rule authors mean a time of day.
    for first, resolvers in list(_Loader.yaml_implicit_resolvers.items()):
        _Loader.yaml_implicit_resolvers[first] = [
            (tag, _INT if tag == "tag:yaml.org,2002:int" else regexp) for tag, regexp in resolvers
        ]


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_resolver_without_sexagesimal()


def _too_big(path: str, size: int) -> LoadError:
    limit = f"{MAX_FILE_BYTES // 1024} KiB"
    return LoadError([Problem(path, 1, 1, f"file is {size} bytes, over the {limit} limit")])


def _unprintable(text: str, path: str, exc: ReaderError) -> Problem:
    """A character YAML does not allow in a file (NUL, BEL, ESC ...), at its line:col."""
    at = exc.position if 0 <= exc.position < len(text) else 0
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(text[at])
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return Problem(
        path,
        line,
        col,
        f"invalid YAML: unprintable character U+{code:04X} is not allowed (remove it; inside "
        f'a double-quoted string write it as the escape "{escape}")',
    )


def load_yaml(text: str, path: str = "<string>") -> Any:
    """Parse YAML text into YDict/YList; raises LoadError with the position of a syntax error.

    Anchors, aliases and merge keys are refused, and so is nesting deeper than MAX_DEPTH and
    text over MAX_FILE_BYTES: parsing ends in time proportional to the text.
    """
    if len(text) > MAX_FILE_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_big(path, len(text.encode("utf-8", "surrogatepass")))
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before parsing
    except ReaderError as exc:
        raise LoadError([_unprintable(text, path, exc)]) from None
    loader.source_path = path
    try:
        return loader.get_single_data()
    except _Refused as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise LoadError([Problem(path, line, col, str(exc.problem))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise LoadError([Problem(path, line, col, f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise LoadError([Problem(path, 1, 1, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def read_text(path: Path, display: str | None = None) -> str:
    """A UTF-8 file of at most MAX_FILE_BYTES; LoadError (at 1:1) when unreadable or bigger.

    Reads no more than the limit, so a huge file costs no memory.
    """
    name = display or str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                handle.seek(0, 2)
                raise _too_big(name, handle.tell())
        # as Path.read_text does (universal newlines): rule versions hash this text
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError([Problem(name, 1, 1, f"cannot read file: {exc}")]) from None
