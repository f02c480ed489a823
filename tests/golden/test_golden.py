"""Generated trees and diagnostics, byte for byte; regenerate with tests/golden/regenerate.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import streamc_runtime
from golden import GOLDEN, REPO, SAMPLE_COPIES, cases, compile_case, expected_tree

TREE_CASES = [c for c in cases() if (c / "expected").is_dir()]
DIAGNOSTIC_CASES = [c for c in cases() if (c / "expected.stderr").is_file()]
REGENERATE = "python tests/golden/regenerate.py"


def test_every_case_has_an_expectation() -> None:
    missing = [c.name for c in cases() if c not in TREE_CASES and c not in DIAGNOSTIC_CASES]
    assert not missing, f"cases without expected/ or expected.stderr: {missing}; run {REGENERATE}"


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: c.name)
def test_generated_tree_matches(case: Path) -> None:
    files, stderr = compile_case(case)
    assert stderr == "", stderr
    expected = expected_tree(case)
    assert sorted(files) == sorted(expected), f"file list differs; run {REGENERATE}"
    for path, text in files.items():
        assert text == expected[path], f"{case.name}/{path} differs; run {REGENERATE}"


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: c.name)
def test_generation_is_deterministic(case: Path) -> None:
    assert compile_case(case) == compile_case(case)


@pytest.mark.parametrize("case", DIAGNOSTIC_CASES, ids=lambda c: c.name)
def test_diagnostics_match(case: Path) -> None:
    files, stderr = compile_case(case)
    assert files == {}
    assert stderr == (case / "expected.stderr").read_text(encoding="utf-8")


def test_sample_copies_are_current() -> None:
    for case, names in SAMPLE_COPIES.items():
        for name in names:
            copy = GOLDEN / case / Path(name).name
            assert copy.read_bytes() == (REPO / name).read_bytes(), f"run {REGENERATE}"


def test_expected_trees_pass_mypy_strict(tmp_path: Path) -> None:
    packages = [
        str(pkg)
        for case in TREE_CASES
        for pkg in sorted((case / "expected").iterdir())
        if (pkg / "__init__.py").is_file()
    ]
    # mypy cannot follow an editable install's import hook, so point it at the runtime source.
    runtime_root = Path(streamc_runtime.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), *packages],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": str(runtime_root)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
