"""The front end's only contact with the file system: read an .sdl file and its hook modules.

`load` reads the .sdl, parses it, reads every hooks module it names (relative to the .sdl's
folder) and checks the whole. Whatever goes wrong (a missing file, bytes that are not UTF-8, a
syntax error) comes back as diagnostics, never as an exception, together with the text of every
file read so the diagnostics can be rendered with their source lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import ast, ir
from .checker import check, hooks_display_path
from .diagnostics import Diagnostic, DiagnosticError, Span
from .parser import parse


@dataclass
class LoadResult:
    program: ir.Program | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # file name as shown -> text
    complete: bool = True  # False: syntax errors were capped, the rest of the file unread


def _read(path: Path, shown: str) -> tuple[str | None, Diagnostic | None, str | None]:
    """The file's text, or a diagnostic and a short reason why it cannot be had."""
    try:
        data = path.read_bytes()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        return (
            None,
            Diagnostic.error(shown, None, "E100", f"cannot read file: {reason}"),
            reason,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = (
            len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        )
        span = Span(line, col, line, col + 1, 0, 0)
        reason = f"byte 0x{data[e.start]:02x} at line {line}, column {col} is not valid UTF-8"
        diag = Diagnostic.error(shown, span, "E101",
                                f"file is not valid UTF-8 (byte 0x{data[e.start]:02x})",
                                ["save the file as UTF-8"])  # fmt: skip
        return None, diag, reason
    # A byte-order mark is not part of the program.
    return text.removeprefix("\ufeff"), None, None


def load(path: Path) -> LoadResult:
    shown = str(path)
    result = LoadResult(program=None)
    text, problem, _ = _read(path, shown)
    if text is None:
        assert problem is not None
        result.diagnostics.append(problem)
        if problem.code == "E101":
            # Show the offending line, with the bad bytes as replacement characters.
            data = path.read_bytes()
            result.sources[shown] = data.decode("utf-8", errors="replace")
        return result
    result.sources[shown] = text
    try:
        module = parse(text, shown)
    except DiagnosticError as e:
        result.diagnostics.extend(e.diagnostics)
        result.complete = e.complete
        return result
    hook_sources: dict[str, str | None] = {}
    hook_errors: dict[str, str] = {}
    for decl in module.decls:
        if isinstance(decl, ast.HooksDecl) and decl.path.value not in hook_sources:
            rel = decl.path.value
            hook_text: str | None = None
            if rel.endswith(".py") and "\0" not in rel:
                hook_text, _, reason = _read(path.parent / rel, rel)
                if reason is not None:
                    hook_errors[rel] = reason
            hook_sources[rel] = hook_text
            if hook_text is not None:
                result.sources[hooks_display_path(shown, rel)] = hook_text
    checked = check(module, hook_sources, hook_errors)
    if isinstance(checked, ir.Program):
        result.program = checked
    else:
        result.diagnostics.extend(checked)
    return result
