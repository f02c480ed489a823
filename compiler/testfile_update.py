"""`streamc test --update`: rewrite the expectations of some cases, leaving the rest alone.

`update_text` replaces the `expect:`, `dead_letters:` and `tables:` of the cases it is given by
what the program produced, line by line in the original text, so comments and layout elsewhere
in the test file survive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .testfile_yaml import _scalar, flow

Produced = tuple[
    list[tuple[str, str, list[dict[str, Any]]]],  # (topic, order, records)
    list[dict[str, Any]],  # dead letters
    list[tuple[str, list[dict[str, Any]]]],  # (table, rows)
]


def update_text(text: str, produced: Mapping[str, Produced | None]) -> str:
    """`text` with the `expect:`, `dead_letters:` and `tables:` of each case named in
    `produced` replaced by what the program produced ({case: (expect, dead, tables)}).

    Only those entries' lines change, so comments and layout elsewhere survive; a case without
    `dead_letters:` gets one only if a dead letter was produced, and one without `tables:`
    only if a table holds rows at its end.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines = text.split("\n")
    edits: list[tuple[int, int, list[str]]] = []  # [first, last] line (0-based) -> new lines
    cases = []
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if _scalar(key_node) == "cases" and isinstance(value_node, yaml.SequenceNode):
                cases = list(value_node.value)
    for case_node in cases:
        if not isinstance(case_node, yaml.MappingNode) or not case_node.value:
            continue
        entries = {_scalar(k): (k, v) for k, v in case_node.value}
        name_entry = entries.get("name")
        name = _scalar(name_entry[1]) if name_entry else None
        result = produced.get(name) if isinstance(name, str) else None
        if result is None:
            continue
        if case_node.flow_style:
            raise ValueError(f"case '{name}' is written in flow style; --update needs block style")
        expect, dead, tables = result
        column = case_node.value[0][0].start_mark.column
        blocks = {
            "expect": _expect_lines(expect),
            "dead_letters": _dead_lines(dead),
            "tables": _table_lines(tables),
        }
        wanted = {"expect": True, "dead_letters": bool(dead), "tables": bool(tables)}
        end = _last_line(lines, case_node)
        for key, block in blocks.items():
            indented = [" " * column + line for line in block]
            if key in entries:
                key_node, value_node = entries[key]
                first = key_node.start_mark.line
                edits.append((first, max(first, _last_line(lines, value_node)), indented))
            elif wanted[key]:
                edits.append((end + 1, end, indented))  # an insertion after the case
    # Later edits first, so earlier line numbers stay valid; two insertions at one place go
    # in reverse so they end up in order.
    order = sorted(range(len(edits)), key=lambda i: (edits[i][0], i), reverse=True)
    for i in order:
        first, last, new = edits[i]
        lines[first : last + 1] = new
    return "\n".join(lines)


def _last_line(lines: list[str], node: yaml.Node) -> int:
    """The last line (0-based) holding text of `node`, not counting trailing comments."""
    end = node.end_mark
    last = end.line
    if end.column == 0 or not lines[end.line][: end.column].strip():
        last -= 1  # the mark is at the start of what follows
    start = node.start_mark.line
    while last > start and (not lines[last].strip() or lines[last].lstrip().startswith("#")):
        last -= 1
    return max(last, start)


def _expect_lines(expect: list[tuple[str, str, list[dict[str, Any]]]]) -> list[str]:
    if not expect:
        return ["expect: {}"]
    out = ["expect:"]
    for topic, order, records in expect:
        name = flow(topic)
        if not records:
            out.append(
                f"  {name}: []"
                if order == "partition"
                else f"  {name}: {{order: set, records: []}}"
            )
            continue
        indent = "  "
        if order == "partition":
            out.append(f"  {name}:")
        else:
            out += [f"  {name}:", "    order: set", "    records:"]
            indent = "    "
        for record in records:
            prefix = f"{indent}  - "
            for field_name, value in record.items():
                out.append(f"{prefix}{field_name}: {flow(value)}")
                prefix = f"{indent}    "
    return out


def _table_lines(tables: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    if not tables:
        return ["tables: {}"]
    out = ["tables:"]
    for name, rows in tables:
        out.append(f"  {name}:" if rows else f"  {name}: []")
        for row in rows:
            prefix = "    - "
            for field_name, value in row.items():
                out.append(f"{prefix}{field_name}: {flow(value)}")
                prefix = "      "
    return out


def _dead_lines(dead: list[dict[str, Any]]) -> list[str]:
    if not dead:
        return ["dead_letters: []"]
    out = ["dead_letters:"]
    for letter in dead:
        prefix = "  - "
        for field_name, value in letter.items():
            out.append(f"{prefix}{field_name}: {flow(value)}")
            prefix = "    "
    return out
