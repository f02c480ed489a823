"""Which files the front end reads: regular files under a size cap, and hooks modules only
from inside the .sdl's folder (or a folder allowed with --allow-root), links followed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamc.cli import main
from streamc.diagnostics import render
from streamc.loader import MAX_HOOK_BYTES, MAX_SDL_BYTES, load

CAP = MAX_HOOK_BYTES  # the documented limit for each hooks module (the .sdl: MAX_SDL_BYTES)
SECRET = "API_KEY=sk-live-0123456789\n"
USES_SHOW = 'topic t\nhooks "{path}" {{ show(bytes) }}\nagent a = from t | sink show\n'


def _project(tmp_path: Path, hooks_path: str) -> Path:
    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / "shop.sdl").write_text(USES_SHOW.format(path=hooks_path))
    return project / "shop.sdl"


def _refusal(sdl: Path, roots: list[Path] | None = None) -> str:
    """The single diagnostic `load` gives, with the project's folder left out of file names.

    The program must not compile, and the secret must appear nowhere."""
    result = load(sdl, roots or [])
    assert result.program is None
    [diagnostic] = result.diagnostics
    rendered = render(result.diagnostics, result.sources)
    assert SECRET.strip() not in rendered and all(SECRET not in t for t in result.sources.values())
    shown = f"{diagnostic.code}: {diagnostic.message} | {' '.join(diagnostic.hints)}"
    return shown.replace(f"{sdl.parent}/", "")


def test_a_hooks_module_outside_the_folder_is_refused(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "../outside/x.py")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.py").write_text(f"# {SECRET}def show(x): pass\n")
    assert _refusal(sdl) == (
        "E206: cannot read hooks module '../outside/x.py' | it is outside the folder of the "
        ".sdl file; hooks modules must be inside it, or inside a folder given with --allow-root"
    )


def test_a_link_to_a_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "hooks.py")
    (tmp_path / ".env").write_text(SECRET)
    (sdl.parent / "hooks.py").symlink_to(tmp_path / ".env")
    assert _refusal(sdl) == (
        "E206: cannot read hooks module 'hooks.py' | it is a link to a file outside the folder "
        "of the .sdl file; hooks modules must be inside it, or inside a folder given with "
        "--allow-root"
    )
    zero = _project(tmp_path / "z", "zero.py")
    (zero.parent / "zero.py").symlink_to("/dev/zero")
    assert _refusal(zero).startswith("E206: cannot read hooks module 'zero.py' | it is a link")


def test_a_link_inside_the_folder_is_followed(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "hooks.py")
    (sdl.parent / "real").mkdir()
    (sdl.parent / "real" / "impl.py").write_text("def show(x): pass\n")
    (sdl.parent / "hooks.py").symlink_to("real/impl.py")
    result = load(sdl)
    assert result.diagnostics == []
    assert result.program is not None
    assert result.program.hook_modules[0].text == "def show(x): pass\n"


def test_an_allowed_root_admits_hooks_from_outside_the_folder(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "../shared/hooks.py")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "hooks.py").write_text("def show(x): pass\n")
    assert load(sdl).program is None
    result = load(sdl, [tmp_path / "shared"])
    assert result.diagnostics == []
    assert result.program is not None
    assert main(["check", str(sdl)]) == 1
    assert main(["check", "--allow-root", str(tmp_path / "shared"), str(sdl)]) == 0


def test_a_device_is_not_read(tmp_path: Path) -> None:
    # Allowed explicitly, /dev/zero would never end: only regular files are read.
    link = _project(tmp_path, "zero.py")
    (link.parent / "zero.py").symlink_to("/dev/zero")
    assert _refusal(link, [Path("/dev")]) == (
        "E206: cannot read hooks module 'zero.py' | not a regular file"
    )


def _check_in_subprocess(sdl: Path) -> subprocess.CompletedProcess[str]:
    # A FIFO hung the old loader for ever: run it where a timeout can stop it.
    return subprocess.run(
        [sys.executable, "-m", "streamc.cli", "check", str(sdl)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "hooks.py")
    os.mkfifo(sdl.parent / "hooks.py")
    result = _check_in_subprocess(sdl)
    assert result.returncode == 1
    assert f"{sdl}:2:7: error[E206]: cannot read hooks module '{sdl.parent}/hooks.py'" in (
        result.stderr
    )
    assert "hint: not a regular file" in result.stderr
    os.mkfifo(tmp_path / "pipe.sdl")
    result = _check_in_subprocess(tmp_path / "pipe.sdl")
    assert result.returncode == 1
    assert f"{tmp_path / 'pipe.sdl'}: error[E100]: cannot read file: not a regular file" in (
        result.stderr
    )


def test_files_larger_than_the_cap_are_refused(tmp_path: Path) -> None:
    sdl = _project(tmp_path, "hooks.py")
    body = "def show(x): pass\n"
    (sdl.parent / "hooks.py").write_text(body + "#" * (CAP - len(body)))
    assert load(sdl).program is not None  # exactly at the cap
    (sdl.parent / "hooks.py").write_text(body + "#" * (CAP - len(body) + 1))
    assert _refusal(sdl) == (
        "E206: cannot read hooks module 'hooks.py' | larger than streamc's limit of 4 MiB"
    )
    big = tmp_path / "big.sdl"
    big.write_text("#" * (MAX_SDL_BYTES + 1))
    [diagnostic] = load(big).diagnostics
    assert (diagnostic.code, diagnostic.message) == (
        "E100",
        "cannot read file: larger than streamc's limit of 32 MiB",
    )
