"""Test files are checked like programs: any text gives diagnostics, never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamc.loader import load
from streamc.testfile import check_test_file

from .conftest import REPO

PROGRAM = load(Path(REPO / "samples" / "orders.sdl")).program
assert PROGRAM is not None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "E402"),
        ("[1, 2]", "E402"),
        ("cases:\n  - 5", "E402"),
        (
            "cases:\n  - name: x\n    inputs:\n"
            "      - {topic: orders, value: !!python/object:os.system x}",
            "E401",
        ),
        ("cases:\n  - name: x\n    inputs:\n      - {topic: totals, value: &a [*a]}", "E401"),
        ("cases:\n  - name: x\n    inputs:\n      - {topic: orders, value: 2024-01-01}", "E404"),
        ("\x00", "E401"),
    ],
)
def test_malformed_test_files_get_a_diagnostic(text: str, code: str) -> None:
    tests, diagnostics = check_test_file(text, "t.test.yaml", PROGRAM)
    assert tests is None
    assert diagnostics[0].code == code


FRAGMENTS = [
    "cases:", "\n  - ", "name: x", "\n    ", "inputs:", "expect:", "dead_letters:", "tables:",
    "agents:", "topic: orders", "value:", "raw:", "key:", "{", "}", "[", "]", ", ", "advance:",
    " 10s", " 5", " null", " &a", " *a", " !!binary", " order: set", " records:", "'", '"',
    "\n      - ", "amount: 1", "totals", "#",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30) | st.text(max_size=80).map(lambda t: [t]))
def test_any_text_gives_diagnostics_never_an_exception(parts: list[str]) -> None:
    tests, diagnostics = check_test_file("".join(parts), "t.test.yaml", PROGRAM)
    assert (tests is None) == any(d.severity == "error" for d in diagnostics)
