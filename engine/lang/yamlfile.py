"""YAML loading that stamps every mapping and list with file, line and column.

Validation errors then name the exact place: `rules/cart.yaml:6:5: unknown key 'delya'`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from engine.errors import LoadError, Problem

Pos = tuple[int, int]


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


class _Loader(yaml.SafeLoader):
    source_path = "<string>"

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


def load_yaml(text: str, path: str = "<string>") -> Any:
    """Parse YAML text into YDict/YList; raises LoadError with the position of a syntax error."""
    loader = _Loader(text)
    loader.source_path = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise LoadError([Problem(path, line, col, f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise LoadError([Problem(path, 1, 1, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path, display: str | None = None) -> Any:
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError([Problem(name, 1, 1, f"cannot read file: {exc}")]) from None
    return load_yaml(text, name)
