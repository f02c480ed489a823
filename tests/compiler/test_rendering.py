"""What the user sees: bidirectional controls never reach a terminal or a graph raw, and the
summary of a run says when syntax errors were capped."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamc import ir
from streamc.checker import check
from streamc.cli import main
from streamc.diagnostics import Diagnostic, Span, render
from streamc.graph import render as graph
from streamc.parser import MAX_SYNTAX_ERRORS, parse

RLO, LRI = "\u202e", "\u2066"


def test_bidi_controls_in_a_source_line_are_shown_as_code_points_and_carets_still_align() -> None:
    line = f'agent a = from t | where id == "{RLO}abc{LRI}" and idd == "x"'
    col = line.index("idd") + 1
    diagnostic = Diagnostic.error(
        "t.sdl", Span(1, col, 1, col + 3, 0, 0), "E201", f"no field in '{RLO}x'", [f"h{LRI}"]
    )
    shown = '    | agent a = from t | where id == "<U+202E>abc<U+2066>" and idd == "x"'
    assert render([diagnostic], {"t.sdl": line}) == (
        f"t.sdl:1:{col}: error[E201]: no field in '<U+202E>x'\n"
        f"{shown}\n"
        f"    |{' ' * (shown.index('idd') - 5)}^^^\n"
        "hint: h<U+2066>\n"
    )


def test_caret_under_a_bidi_control_covers_its_code_point() -> None:
    line = f'x "{RLO}"'
    diagnostic = Diagnostic.error("t.sdl", Span(1, 3, 1, 6, 0, 0), "E105", "m")
    assert render([diagnostic], {"t.sdl": line}).splitlines()[1:] == [
        '    | x "<U+202E>"',
        "    |   ^^^^^^^^^^",
    ]


@pytest.mark.parametrize(
    ("fmt", "label"),
    [
        ("mermaid", "where id == #quot;#lt;U+202E#gt;abc#quot;"),
        ("dot", 'where id == \\"<U+202E>abc\\"'),
    ],
)
def test_graph_labels_show_bidi_controls_as_code_points(fmt: str, label: str) -> None:
    text = (
        "app g\nrecord Order { id: str }\ntopic orders: Order key str\n"
        f'agent a = from orders | where id == "{RLO}abc" | to "out"\n'
    )
    program = check(parse(text, "g.sdl"), {}).program
    assert isinstance(program, ir.Program)
    drawn = graph(program, fmt)  # type: ignore[arg-type]
    assert label in drawn
    assert RLO not in drawn


def test_summary_says_when_syntax_errors_were_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capped = tmp_path / "capped.sdl"
    capped.write_text("".join(f"topic t{i} key\n" for i in range(MAX_SYNTAX_ERRORS + 5)))
    assert main(["check", str(capped)]) == 1
    err = capsys.readouterr().err
    assert err.count("error[E104]") + err.count("error[E103]") == MAX_SYNTAX_ERRORS
    assert err.endswith(
        f"{capped}: {MAX_SYNTAX_ERRORS} errors (stopped there: the rest of the file was not read)\n"
    )
    whole = tmp_path / "whole.sdl"
    whole.write_text("".join(f"topic t{i} key\n" for i in range(MAX_SYNTAX_ERRORS)))
    assert main(["check", str(whole)]) == 1
    assert capsys.readouterr().err.endswith(f"{whole}: {MAX_SYNTAX_ERRORS} errors\n")
