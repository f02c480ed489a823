"""Golden failing cases: one folder per case under cases/, in the manner of sqlc's testdata.

Each folder holds `input.sdl` (plus `hooks.py` when the case needs one) and `expected.txt`,
the rendered diagnostics; an E4xx folder adds `input.test.yaml`, a test file of the (valid)
program, and `expected.txt` holds the test file's diagnostics. A hooks module that is
deliberately not Python is stored as `hooks.py.txt` (so linters leave it alone) and copied to
`hooks.py` for the run. A folder named `E201-...` must produce at least one E201; one named
`W501-...` is a program that compiles, with at least one W501. To refresh every
`expected.txt` after a deliberate wording change:

    STREAMC_REGEN=1 .venv/bin/python -m pytest tests/compiler/test_cases.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamc.diagnostics import CODES, render
from streamc.loader import load
from streamc.testfile import check_test_file

from .conftest import CASES

CASE_DIRS = sorted(p for p in CASES.iterdir() if (p / "input.sdl").exists())


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    work = tmp_path / case.name
    shutil.copytree(case, work)
    for stored in work.glob("*.py.txt"):
        stored.rename(stored.with_suffix(""))
    monkeypatch.chdir(work)  # diagnostics name the file as given: "input.sdl"
    result = load(Path("input.sdl"))
    code = case.name.split("-")[0]
    if (work / "input.test.yaml").exists():  # a test file's case: the program is fine
        assert result.program is not None, render(result.diagnostics, result.sources)
        text = (work / "input.test.yaml").read_text(encoding="utf-8")
        tests, diagnostics = check_test_file(text, "input.test.yaml", result.program)
        assert tests is None, "a failing test file must not check clean"
        result.diagnostics[:] = diagnostics
        result.sources["input.test.yaml"] = text
    elif code.startswith("W"):
        assert result.program is not None, "a warning must not stop the program compiling"
    else:
        assert result.program is None, "a failing case must not check clean"
    assert code in CODES
    assert code in {d.code for d in result.diagnostics}, render(
        result.diagnostics, result.sources
    )
    rendered = render(result.diagnostics, result.sources)
    expected = case / "expected.txt"
    if os.environ.get("STREAMC_REGEN") or not expected.exists():
        expected.write_text(rendered, encoding="utf-8")
    assert rendered == expected.read_text(encoding="utf-8")


def test_every_code_has_a_case_or_a_unit_test() -> None:
    covered = {p.name.split("-")[0] for p in CASE_DIRS}
    # E100 (an unreadable .sdl) cannot live in a case folder; test_front_end covers it.
    assert set(CODES) - covered <= {"E100"}
