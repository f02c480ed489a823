"""The local modules hooks import are found through their import statements and shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamc.diagnostics import render
from streamc.loader import load

SDL = 'record Order { id: str }\nhooks "HOOKS" {\n    keep(Order) -> bool\n}\n'
KEEP = "\n\ndef keep(order: object) -> bool:\n    return True\n"


def _project(folder: Path, hooks: str, importing: str) -> Path:
    (folder / "shop.sdl").write_text(SDL.replace("HOOKS", hooks))
    (folder / hooks).parent.mkdir(parents=True, exist_ok=True)
    (folder / hooks).write_text(importing + KEEP)
    return folder / "shop.sdl"


def test_helpers_are_found_recursively_beside_each_hooks_module(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "lib/hooks.py", "import os\nimport helpers\n")
    (tmp_path / "lib" / "helpers.py").write_text("def f():\n    from deeper import X\n")
    (tmp_path / "lib" / "deeper.py").write_text("X = 1\n")
    (tmp_path / "helpers.py").write_text("# not this one: the hooks module's folder counts\n")
    result = load(sdl)
    assert result.program is not None, render(result.diagnostics, result.sources)
    assert [(h.module, h.source_path, h.text) for h in result.program.helper_modules] == [
        ("deeper", "lib/deeper.py", "X = 1\n"),
        ("helpers", "lib/helpers.py", "def f():\n    from deeper import X\n"),
    ]


def test_a_helper_outside_the_sdl_folder_is_reported(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret.py").write_text("KEY = 'x'\n")
    (project / "secret.py").symlink_to(tmp_path / "secret.py")
    result = load(_project(project, "hooks.py", "from secret import KEY\n"))
    assert result.program is None
    assert [(d.code, d.line, d.message) for d in result.diagnostics] == [
        ("E212", 1, "local module 'secret.py' lies outside the folder of shop.sdl")
    ]


def test_a_helper_beside_hooks_in_an_allowed_root_is_shipped(tmp_path: Path) -> None:
    project, shared = tmp_path / "project", tmp_path / "shared"
    project.mkdir()
    shared.mkdir()
    sdl = _project(project, "../shared/hooks.py", "from helpers import LIMIT\n")
    (shared / "helpers.py").write_text("LIMIT = 3\n")
    result = load(sdl, [shared])
    assert result.program is not None, render(result.diagnostics, result.sources)
    assert [(h.module, h.source_path, h.text) for h in result.program.helper_modules] == [
        ("helpers", "../shared/helpers.py", "LIMIT = 3\n"),
    ]
    assert (shared / "helpers.py").resolve() in result.files


def test_a_helper_outside_the_allowed_roots_says_how_to_allow_it(tmp_path: Path) -> None:
    project, shared = tmp_path / "project", tmp_path / "shared"
    (project / "lib").mkdir(parents=True)
    shared.mkdir()
    (shared / "helpers.py").write_text("LIMIT = 3\n")
    (project / "lib" / "helpers.py").symlink_to(shared / "helpers.py")
    result = load(_project(project, "lib/hooks.py", "from helpers import LIMIT\n"))
    assert result.program is None
    assert [(d.code, d.message, d.hints) for d in result.diagnostics] == [
        ("E212", "local module 'lib/helpers.py' lies outside the folder of shop.sdl",
         ("it is a link to a file outside the folder of the .sdl file; hooks modules must be "
          "inside it, or inside a folder given with --allow-root",)),
    ]  # fmt: skip


def test_two_helpers_of_one_name_are_reported(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "a/hooks.py", "import util\n")
    (tmp_path / "a" / "util.py").write_text("A = 1\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "more.py").write_text("import util\n" + KEEP.replace("keep", "other"))
    (tmp_path / "b" / "util.py").write_text("B = 1\n")
    sdl.write_text(sdl.read_text() + 'hooks "b/more.py" {\n    other(Order) -> bool\n}\n')
    result = load(sdl)
    assert result.program is None
    assert [(d.file, d.code, d.message) for d in result.diagnostics] == [
        (str(tmp_path / "b" / "more.py"), "E212",
         "local module 'b/util.py' has the same name as 'a/util.py'"),
    ]  # fmt: skip


@pytest.mark.parametrize("statement", ["import json", "from collections import deque"])
def test_installed_and_standard_modules_are_not_shipped(tmp_path: Path, statement: str) -> None:
    result = load(_project(tmp_path, "hooks.py", statement + "\n"))
    assert result.program is not None
    assert result.program.helper_modules == ()
