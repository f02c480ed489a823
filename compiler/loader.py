"""The front end's only contact with the file system: read an .sdl file and its hook modules.

`load` reads the .sdl, parses it, reads every hooks module it names (relative to the .sdl's
folder) and checks the whole. Whatever goes wrong (a missing file, bytes that are not UTF-8, a
syntax error) comes back as diagnostics, never as an exception, together with the text of every
file read so the diagnostics can be rendered with their source lines.

Only regular files of at most `MAX_SDL_BYTES` (the .sdl) or `MAX_HOOK_BYTES` (Python modules)
are read (a FIFO would hang, a device never
ends), and a hooks module must resolve, links followed, inside the .sdl's folder or a root the
user allowed: a program cannot make streamc copy a file from elsewhere into the package, nor
quote it in a diagnostic.
"""

from __future__ import annotations

import ast as pyast
import dataclasses
import errno
import os
import posixpath
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import ast, ir
from .checker import Facts, check, hooks_display_path
from .diagnostics import Diagnostic, DiagnosticError, Span
from .hook_imports import Imported, imports_of
from .parser import parse


@dataclass
class LoadResult:
    program: ir.Program | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # file name as shown -> text
    files: list[Path] = field(default_factory=list)  # every file read, resolved
    complete: bool = True  # False: syntax errors were capped, the rest of the file unread
    module: ast.Module | None = None  # the parsed source, when it parsed
    facts: Facts | None = None  # what the checker learnt (`load_text(..., facts=True)`)


# Caps that no real file reaches but that a device or a runaway file does. A program of 10 MB
# (100,000 agents) is checked in seconds (bench/bench_check.py), so the .sdl may be larger.
MAX_SDL_BYTES = 32 << 20
MAX_HOOK_BYTES = 4 << 20


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else OSError."""
    # Non-blocking, so that opening a FIFO returns at once instead of waiting for a writer;
    # the type is then checked on the open file, which a rename cannot swap afterwards.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the size from fstat may be stale: stop one byte past the cap
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than streamc's limit of {limit >> 20} MiB", str(path))
    return b"".join(chunks)


def inside_project(
    folder: Path, relative: str, roots: Sequence[Path] = ()
) -> tuple[Path | None, str | None]:
    """`relative` (as written in the .sdl) resolved against `folder`, links followed.

    Returns the resolved path when it lies inside `folder` or one of `roots`, else None and
    the reason, which never names the file a link points to.
    """
    target = folder / relative
    try:
        resolved = target.resolve()
        allowed = [folder.resolve(), *(root.resolve() for root in roots)]
    except (OSError, RuntimeError):  # a loop of links
        return None, "its links cannot be followed"
    if any(resolved.is_relative_to(root) for root in allowed):
        return resolved, None
    lexical = Path(os.path.normpath(os.path.abspath(target)))
    if any(lexical.is_relative_to(Path(os.path.abspath(root))) for root in [folder, *roots]):
        where = "it is a link to a file outside the folder of the .sdl file"
    else:
        where = "it is outside the folder of the .sdl file"
    return None, f"{where}; hooks modules must be inside it, or inside a folder given with " \
        "--allow-root"  # fmt: skip


def _read(
    path: Path, shown: str, limit: int = MAX_HOOK_BYTES
) -> tuple[str | None, Diagnostic | None, str | None]:
    """The file's text, or a diagnostic and a short reason why it cannot be had."""
    try:
        data = read_limited(path, limit)
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


def load(path: Path, roots: Sequence[Path] = ()) -> LoadResult:
    """Load and check `path`; hooks modules may also live under the folders in `roots`."""
    shown = str(path)
    result = LoadResult(program=None)
    text, problem, _ = _read(path, shown, MAX_SDL_BYTES)
    if text is None:
        assert problem is not None
        result.diagnostics.append(problem)
        if problem.code == "E101":
            # Show the offending line, with the bad bytes as replacement characters.
            data = read_limited(path, MAX_SDL_BYTES)
            result.sources[shown] = data.decode("utf-8", errors="replace")
        return result
    return load_text(path, text, roots, result=result)


def load_text(
    path: Path,
    text: str,
    roots: Sequence[Path] = (),
    *,
    facts: bool = False,
    hook_texts: Mapping[Path, str] | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Check `text` as the contents of `path`: what an editor holds, saved or not.

    `hook_texts` gives the text of hooks modules (by resolved path) to use instead of what
    is on disk, such as modules open in the editor.
    """
    shown = str(path)
    if result is None:
        result = LoadResult(program=None)
    result.sources[shown] = text
    result.files.append(path.resolve())
    try:
        module = parse(text, shown)
    except DiagnosticError as e:
        result.diagnostics.extend(e.diagnostics)
        result.complete = e.complete
        return result
    result.module = module
    hook_sources: dict[str, str | None] = {}
    hook_errors: dict[str, str] = {}
    for decl in module.decls:
        if isinstance(decl, ast.HooksDecl) and decl.path.value not in hook_sources:
            rel = decl.path.value
            hook_text: str | None = None
            if rel.endswith(".py") and "\0" not in rel:
                where, reason = inside_project(path.parent, rel, roots)
                if where is not None and hook_texts and where in hook_texts:
                    hook_text = hook_texts[where]
                elif where is not None:
                    hook_text, _, reason = _read(where, rel)
                if reason is not None:
                    hook_errors[rel] = reason
                elif where is not None:
                    result.files.append(where)
            hook_sources[rel] = hook_text
            if hook_text is not None:
                result.sources[hooks_display_path(shown, rel)] = hook_text
    checked = check(module, hook_sources, hook_errors, facts=facts)
    result.facts = checked.facts
    helpers, problems = _load_helpers(path, hook_sources, result.sources, roots)
    result.files.extend((path.parent / h.source_path).resolve() for h in helpers)
    if checked.program is not None and not problems:
        result.program = dataclasses.replace(checked.program, helper_modules=tuple(helpers))
    result.diagnostics.extend(
        sorted(set([*checked.diagnostics, *problems]), key=Diagnostic.sort_key)
    )
    return result


def _load_helpers(
    sdl: Path,
    hook_sources: dict[str, str | None],
    sources: dict[str, str],
    roots: Sequence[Path] = (),
) -> tuple[list[ir.HelperModule], list[Diagnostic]]:
    """The local modules the hooks import, and the local modules those import, by name.

    A module is local when `NAME.py` lies in the folder of the module importing it, which is
    where Python finds it when the hooks run beside the .sdl. What cannot be shipped as a
    module the worker imports by the same name is reported (E212) rather than left to fail
    when the worker starts: a local package, a module outside the .sdl's folder and the
    allowed `roots` (where hooks modules may be), two different modules of one name, a name
    the standard library uses.
    """
    helpers: dict[str, ir.HelperModule] = {}
    problems: list[Diagnostic] = []
    pending = [(rel.replace("\\", "/"), text, False) for rel, text in hook_sources.items()
               if text is not None]  # fmt: skip
    while pending:
        rel, text, is_helper = pending.pop(0)
        display = hooks_display_path(str(sdl), rel)
        try:
            tree = pyast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            if is_helper:  # (the checker reports hooks modules that are not Python)
                line, col = getattr(e, "lineno", None) or 0, getattr(e, "offset", None) or 1
                span = Span(line, col, line, col + 1, 0, 0) if line else None
                reason = getattr(e, "msg", type(e).__name__)
                problems.append(Diagnostic.error(display, span, "E212",
                                                 f"local module is not valid Python: {reason}"))
            continue
        for imported in imports_of(tree, text.split("\n")):
            try:
                found = _local_module(sdl, posixpath.dirname(rel), imported, helpers, roots)
            except (OSError, RuntimeError) as e:  # a symlink loop, a folder we may not read
                found = (f"cannot look for local module '{imported.name}': {e}", [])
            if isinstance(found, ir.HelperModule):
                helpers[found.module] = found
                sources[hooks_display_path(str(sdl), found.source_path)] = found.text
                pending.append((found.source_path, found.text, True))
            elif found is not None:
                problems.append(Diagnostic.error(display, imported.span, "E212", *found))
    return sorted(helpers.values(), key=lambda h: h.module), problems


def _local_module(
    sdl: Path,
    folder: str,
    imported: Imported,
    helpers: dict[str, ir.HelperModule],
    roots: Sequence[Path] = (),
) -> ir.HelperModule | tuple[str, list[str]] | None:
    """The local module an import names, a problem (message, hints), or None: not local."""
    name = imported.name
    rel = posixpath.join(folder, f"{name}.py")
    file = sdl.parent / rel
    if not file.exists() and (sdl.parent / folder / name / "__init__.py").is_file():
        return (f"'{name}' is a local package, which streamc does not copy into the worker",
                [f"make it a single module, {name}.py, or install it beside the worker"])
    if not file.is_file():
        return None  # the standard library or an installed package
    if name in sys.stdlib_module_names:
        return (f"local module '{rel}' has the name of a standard library module",
                ["rename it: in the worker it would hide the standard library's"])
    where, reason = inside_project(sdl.parent, rel, roots)
    if where is None:
        return (f"local module '{rel}' lies outside the folder of {sdl.name}",
                [reason] if reason else [])  # fmt: skip
    first = helpers.get(name)
    if first is not None:
        if first.source_path == rel:
            return None  # already shipped
        return (f"local module '{rel}' has the same name as '{first.source_path}'",
                [f"the worker can hold only one module named '{name}'; rename one"])
    text, _, reason = _read(file, rel)
    if text is None:
        return (f"cannot read local module '{rel}'", [reason] if reason else [])
    return ir.HelperModule(name, rel, text)
