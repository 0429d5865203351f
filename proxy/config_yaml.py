"""Reading the config's YAML without the format's traps: a file is parsed into plain data, or refused
with one line naming where (`config line 12, column 3: ...`).

Plain `yaml.safe_load` runs no code, but it accepts what a hardened loader must not:
- alias bombs: nine anchors of nine aliases each are a few hundred bytes that expand to 9^9 values
  once anything walks the tree (environment interpolation does).  Every alias here adds the size of
  what it points to to a running total of expanded values, refused past `MAX_VALUES`; an alias to
  the node that contains it (a cycle) is refused as well;
- deep nesting: composing a 50,000-deep list exhausts Python's stack (a RecursionError traceback).
  Nesting is refused past `MAX_DEPTH` levels;
- duplicate keys, which YAML forbids but PyYAML resolves silently in favour of the last one (a
  second `api_key:` or `models:` a reviewer never sees).  Keys brought in by a merge (`<<: *base`)
  may still be overridden: that is what merging is for.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode

MAX_DEPTH = 64  # nesting levels (the deepest real config is a JSON schema inside `params`)
MAX_VALUES = 100_000  # values in the document with every alias expanded

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLConfigError(ValueError):
    """The document cannot be read; the message is one line and names the line and column."""


def _where(mark: Any) -> str:
    return f"config line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "config"


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._anchored_size: dict[int, int] = {}  # id(anchored node) -> its size, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._anchored_size.get(id(node))
            if size is None:
                raise YAMLConfigError(f"{_where(event.start_mark)}: alias *{event.anchor} refers to a value that contains it")
            self._count(size, event)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLConfigError(f"{_where(event.start_mark)}: nested more than {MAX_DEPTH} levels deep")
        before = self._values
        self._count(1, event)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if getattr(event, "anchor", None) is not None:
            self._anchored_size[id(node)] = self._values - before
        return node

    def _count(self, n: int, event: Any) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            raise YAMLConfigError(
                f"{_where(event.start_mark)}: the document expands to more than {MAX_VALUES} values (aliases counted)"
            )

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    break
                if first is not key_node.start_mark:
                    raise YAMLConfigError(
                        f"{_where(key_node.start_mark)}: duplicate key {key!r} (first at line {first.line + 1})"
                    )
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """The YAML document in `text` as plain data (YAMLConfigError when refused or invalid)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YAMLConfigError(f"{_where(mark)}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YAMLConfigError(f"config: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
