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


def _found(text: str) -> list[tuple[int, int, str, str, tuple[str, ...]]]:
    tests, diagnostics = check_test_file(text, "t.test.yaml", PROGRAM)
    assert tests is None
    return [(d.line, d.col, d.code, d.message, d.hints) for d in diagnostics]


def test_expected_table_rows_are_checked_against_the_tables_types() -> None:
    text = """\
cases:
  - name: x
    tables:
      totals_by_acount: []
      totals_by_account:
        - {key: acct-1, value: {account_id: acct-1, orders: 1, amount: 10}, windw: 3}
        - {key: 5, value: {account_id: acct-1, orders: many, amount: 10}}
        - {key: a, window: [1, 2]}
        - {key: b}
        - {key: b}
        - {value: {account_id: c, orders: 1, amount: 1}}
      minutes_by_account:
        - {key: acct-1}
        - {key: acct-2, window: [5, 3]}
        - {key: acct-3, window: [5, soon]}
"""
    assert _found(text) == [
        (4, 7, "E406", "the program has no table 'totals_by_acount'",
         ("did you mean 'totals_by_account'?",)),
        (6, 77, "E402", "a row of table totals_by_account has no field 'windw'",
         ("did you mean 'window'?",)),
        (7, 17, "E404", "the key of table totals_by_account: expected str, got a number 5",
         ("YAML reads this as a number; quote it to make it a string",)),
        (7, 56, "E404", "AccountTotals.orders: expected int, got the string 'many'", ()),
        (8, 20, "E402", "table totals_by_account has no window: its rows have no `window`", ()),
        (10, 11, "E407", "table totals_by_account has one row per key; this one is given twice "
         "(line 9)", ()),
        (11, 11, "E402", "a row of table totals_by_account needs `key:`", ()),
        (13, 11, "E402", "a row of table minutes_by_account needs `window: [START, END]`: the "
         "table holds a row per key and window", ()),
        (14, 33, "E407", "`window` is [START, END] with START before END", ()),
        (15, 37, "E404", "window: expected time, got the string 'soon'",
         ("a time is RFC 3339 text with an offset, such as 2026-03-01T12:00:00Z, or epoch "
          "milliseconds",)),
    ]  # fmt: skip


def test_a_table_expectation_reads_windows_as_rfc3339_or_epoch_ms() -> None:
    text = """\
cases:
  - name: x
    tables:
      minutes_by_account:
        - key: acct-1
          window: ["2026-03-01T12:00:00Z", 1772366460000]
          value: {account_id: acct-1, window_start: 1772366400000,
                  window_end: 2026-03-01T13:01:00+01:00, orders: 1, amount: 1}
      totals_by_account: []
"""
    tests, diagnostics = check_test_file(text, "t.test.yaml", PROGRAM)
    assert diagnostics == []
    assert tests is not None
    (minutes, totals) = tests.cases[0].tables
    assert (minutes.name, totals.name, totals.rows) == (
        "minutes_by_account",
        "totals_by_account",
        (),
    )
    assert minutes.rows[0].fields["window"] == (1772366400000, 1772366460000)
    assert minutes.rows[0].fields["key"] == "acct-1"


def test_a_program_without_tables_says_so_for_any_table_named() -> None:
    bare = load(Path(REPO / "tests/compiler/cases/E405-test-file-unknown-agent/input.sdl"))
    assert bare.program is not None and bare.program.tables == ()
    _, diagnostics = check_test_file(
        "cases:\n  - name: x\n    tables: {counts: []}\n", "t.test.yaml", bare.program
    )
    assert [(d.code, d.message, d.hints) for d in diagnostics] == [
        ("E406", "the program has no table 'counts'", ("the program declares no tables",))
    ]
