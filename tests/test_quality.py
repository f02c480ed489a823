"""The project's own code stays lint-clean and type-checks under mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_ruff() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_compiler_and_runtime(tmp_path: Path) -> None:
    # `compiler/` is installed as `streamc`; mypy checks it under its folder name, and finds
    # the runtime through MYPYPATH because editable installs hide it behind an import hook.
    result = _run(
        "mypy",
        "--strict",
        "--cache-dir",
        str(tmp_path),
        "compiler",
        "runtime/streamc_runtime",
        env={"MYPYPATH": str(REPO / "runtime")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
