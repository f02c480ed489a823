"""A lone CR ends a line, as LF and CRLF do: old Mac files must not lose their lines."""

from __future__ import annotations

from pathlib import Path

from streamc.diagnostics import render
from streamc.loader import load

LINES = [
    "# orders, saved with CR line ends",
    "record Order { id: str }",
    "topic orders: Order key str",
    'agent copy = from orders | to "copies"  # a comment ends at its line end',
    "agent count = from orders | take 2",
]


def test_cr_only_file_keeps_every_declaration_after_a_comment(tmp_path: Path) -> None:
    results = {}
    for name, end in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        path = tmp_path / f"{name}.sdl"
        path.write_bytes(end.join(LINES).encode("utf-8"))
        result = load(path)
        assert result.program is not None, render(result.diagnostics, result.sources)
        results[name] = result.program
    assert [a.name for a in results["cr"].agents] == ["copy", "count"]
    assert results["cr"].agents == results["lf"].agents == results["crlf"].agents


def test_error_in_a_cr_only_file_is_shown_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "input.sdl"
    path.write_bytes(b"# comment\rrecord Order { id: str }\rtopic orders: Order key")
    result = load(path)
    assert render(result.diagnostics, result.sources) == (
        f"{path}:3:24: error[E104]: unexpected end of file\n"
        "    | topic orders: Order key\n"
        "    |                        ^\n"
        "hint: expected a key type\n"
    )
