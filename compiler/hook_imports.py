"""The modules a hooks module imports, read from its `import` statements without running it.

Beside the .sdl, `from helpers import LIMIT` finds `helpers.py` in the hooks module's folder.
In the worker package the hooks live elsewhere, so the loader copies such local modules (and
the local modules they import) into the package, where the worker finds them by the same
names. This module only reads the statements; which names are local is the loader's question.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass

from .diagnostics import Span


@dataclass(frozen=True)
class Imported:
    """One imported module: `name` is the first component (`a` for `import a.b`)."""

    name: str
    span: Span  # the import statement


def imports_of(tree: pyast.Module, lines: list[str]) -> list[Imported]:
    """Every module imported by name anywhere in the module (also inside functions and `if`
    blocks: shipping a module the worker may never import is harmless, missing one is not).

    Relative imports are left out: in the worker they address its own package, such as
    `from ..records import Order`.
    """
    found: list[Imported] = []
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, pyast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        span = _span(node, lines)
        found.extend(Imported(n.split(".")[0], span) for n in names)
    return found


def _span(node: pyast.stmt, lines: list[str]) -> Span:
    # `ast` columns count UTF-8 bytes; diagnostics count characters. The span is the
    # statement's first line, which is what the caret can show.
    text = lines[node.lineno - 1] if 0 < node.lineno <= len(lines) else ""
    col = len(text.encode("utf-8")[: node.col_offset].decode("utf-8", errors="replace")) + 1
    end = (
        len(text.rstrip()) + 1
        if node.end_lineno != node.lineno
        else len(text.encode("utf-8")[: node.end_col_offset or 0].decode("utf-8", errors="replace"))
        + 1
    )
    return Span(node.lineno, col, node.lineno, max(end, col + 1), 0, 0)
