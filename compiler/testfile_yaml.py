"""The YAML of test files: positions of nodes and the values they hold.

Values are built from PyYAML's nodes by its safe constructor, so each keeps its node's position
for diagnostics; `_fits` and `_is_time` say whether a value fits a field type as the record
codec would read it, and `_describe` and `_show` put a value into a message.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

import yaml

from .diagnostics import Span


def _mark_span(mark: Any) -> Span:
    return Span(mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2, mark.index,
                mark.index + 1)  # fmt: skip


def node_span(node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1, start.index,
                end.index)  # fmt: skip


_constructor = yaml.SafeLoader("")


def plain(node: yaml.Node) -> Any:
    """The Python value of a node (mappings as dicts, sequences as lists)."""
    return _constructor.construct_object(node, deep=True)


def _scalar(node: yaml.Node) -> Any:
    return plain(node) if isinstance(node, yaml.ScalarNode) else _NOT_SCALAR


_NOT_SCALAR = object()


def _fits(name: str, value: Any) -> bool:
    if name == "time":
        return _is_time(value)
    if name in ("str", "bytes"):
        return isinstance(value, str)
    if name == "int":
        return _is_int(value)
    if name == "float":
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    return isinstance(value, bool)


def _is_time(value: Any) -> bool:
    """An instant as the record codec reads it: epoch milliseconds, or RFC 3339 text with an
    offset (YAML reads an unquoted one as a timestamp: fine when it has an offset too)."""
    if _is_int(value):
        return True
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            return False
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return False
    return isinstance(value, datetime.datetime) and value.tzinfo is not None


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def epoch_ms(value: Any) -> int:
    """A value `_is_time` accepts, in epoch milliseconds."""
    if _is_int(value):
        return int(value)
    moment = (
        value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    )
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the bool {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = plain(node)
    if isinstance(value, str):
        return f"the string {_show(value)}"
    return (
        f"{_yaml_kind(value)} {_show(value)}" if not isinstance(value, bool) else _yaml_kind(value)
    )


def _show(value: Any) -> str:
    if value is _NOT_SCALAR:
        return "a list or mapping"
    if isinstance(value, str):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def flow(value: Any) -> str:
    """A value on one line, in YAML flow style."""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return dumped.strip().removesuffix("...").strip()
