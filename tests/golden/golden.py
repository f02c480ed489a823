"""Golden cases: `tests/golden/<case>/` holds one `.sdl` (plus any hook modules) and either
`expected/`, the whole generated tree (with the manifest `streamc build` writes beside it), or
`expected.stderr`, the diagnostics it must get.

`python tests/golden/regenerate.py` rewrites every expectation from the current compiler; the
tests compare byte for byte. The `orders` case is a copy of `samples/` so that the showcase's
output is pinned too; regeneration refreshes the copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from streamc.diagnostics import render
from streamc.emit import emit
from streamc.loader import load
from streamc.manifest import with_manifest

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parent.parent
SAMPLE_COPIES = {"orders": ("samples/orders.sdl", "samples/hooks.py")}


def cases() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if p.is_dir() and any(p.glob("*.sdl")))


def source_of(case: Path) -> Path:
    (sdl,) = case.glob("*.sdl")
    return sdl


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Compile with the case folder as the working directory, so paths in output are short."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def compile_case(case: Path) -> tuple[dict[str, str], str]:
    """The generated files (relative path → text) and the rendered diagnostics."""
    with inside(case):
        result = load(Path(source_of(case).name))
        stderr = render(result.diagnostics, result.sources) if result.diagnostics else ""
        if result.program is None:
            return {}, stderr
        tree = with_manifest(emit(result.program))
        return {str(path): text for path, text in tree.items()}, stderr


def expected_tree(case: Path) -> dict[str, str]:
    root = case / "expected"
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".mypy_cache" not in path.parts
    }


def refresh_sample_copies() -> None:
    for case, files in SAMPLE_COPIES.items():
        folder = GOLDEN / case
        folder.mkdir(exist_ok=True)
        for name in files:
            shutil.copyfile(REPO / name, folder / Path(name).name)


def refresh_docs_diagram() -> None:
    """docs/architecture.md shows the sample's topology as `streamc graph` prints it."""
    from streamc.graph import render

    with inside(REPO):
        result = load(Path("samples/orders.sdl"))
    assert result.program is not None, "samples/orders.sdl must check clean"
    doc = REPO / "docs" / "architecture.md"
    text = doc.read_text(encoding="utf-8")
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    doc.write_text(text[:start] + render(result.program) + text[end:], encoding="utf-8")


def regenerate(case: Path) -> None:
    files, stderr = compile_case(case)
    shutil.rmtree(case / "expected", ignore_errors=True)
    (case / "expected.stderr").unlink(missing_ok=True)
    if files:
        for relative, text in files.items():
            target = case / "expected" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))
    else:
        (case / "expected.stderr").write_bytes(stderr.encode("utf-8"))
