"""`streamc fmt`: one canonical layout, comments kept, idempotent, meaning unchanged.

The properties run over generated programs written in random layouts with comments between
their lines; the sample and the docs' examples are kept formatted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc import ast
from streamc.diagnostics import DiagnosticError
from streamc.fmt import FormatError, format_source, shape
from streamc.parser import lex, parse

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def fmt(text: str) -> str:
    return format_source(text, "p.sdl")


def streamc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamc.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_sample_is_formatted() -> None:
    text = (REPO / "samples" / "orders.sdl").read_text(encoding="utf-8")
    assert fmt(text) == text


def _doc_examples() -> list[tuple[str, str]]:
    """Every ```sdl block of the docs that is a whole program, outside the generated list of
    diagnostics (those are test cases, wrong on purpose)."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8").partition("<!-- examples -->")[0]
        for block in re.findall(r"```sdl\n(.*?)```", text, re.S):
            try:
                parse(block, "example.sdl")
            except DiagnosticError:
                continue  # a fragment, such as one operation
            found.append((doc.name, block))
    return found


def test_the_docs_examples_are_formatted() -> None:
    examples = _doc_examples()
    assert len(examples) >= 6
    for name, block in examples:
        assert fmt(block) == block, f"an example in {name} is not formatted:\n{block}"


def test_each_construct_gets_its_canonical_layout() -> None:
    messy = (
        "app   shop\n\n\n\n"
        'record Order { id : str  amount:float tags : list [ str ]=[ "a","b" ]'
        " note: str ? = null  n: int = - 1 }\n"
        "record Empty {}\n"
        'topic orders : Order key str\n   partitions 4 name "shop.orders"\n'
        'hooks "hooks.py" { big ( Order )->bool  show(int,Order) }\n'
        "agent a = from orders|where -amount<-1 and not(note==null)|take 5 within 10s\n"
        "agent b = from orders | where amount > 1 | group_by id | enumerate 1 | sink show\n"
    )
    assert fmt(messy) == (
        "app shop\n\n"
        "record Order {\n"
        "    id: str\n"
        "    amount: float\n"
        '    tags: list[str] = ["a", "b"]\n'
        "    note: str? = null\n"
        "    n: int = -1\n"
        "}\n"
        "record Empty {}\n"
        'topic orders: Order key str partitions 4 name "shop.orders"\n'
        'hooks "hooks.py" {\n'
        "    big(Order) -> bool\n"
        "    show(int, Order)\n"
        "}\n"
        "agent a = from orders | where -amount < -1 and not (note == null) | take 5 within 10s\n"
        "agent b =\n"
        "    from orders\n"
        "    | where amount > 1\n"
        "    | group_by id\n"
        "    | enumerate 1\n"
        "    | sink show\n"
    )


def test_comments_stay_where_they_were_written() -> None:
    text = (
        "# head\n\n\n"
        "record R {  # opens\n"
        "  # before a\n"
        "  a: int # after a\n"
        "  bb: str    # after bb\n\n"
        "  # last\n"
        "}  # closes\n"
        "agent x = from t  # source\n"
        "  # between\n"
        "  | to u\n"
        "# tail\n"
    )
    assert fmt(text) == (
        "# head\n\n"
        "record R {  # opens\n"
        "    # before a\n"
        "    a: int   # after a\n"
        "    bb: str  # after bb\n\n"
        "    # last\n"
        "}  # closes\n"
        "agent x =\n"
        "    from t  # source\n"
        "    # between\n"
        "    | to u\n"
        "# tail\n"
    )


def test_a_comment_with_no_place_refuses_the_file() -> None:
    with pytest.raises(FormatError) as caught:
        fmt("topic orders # where would this go?\n  key str\n")
    assert (caught.value.line, caught.value.col) == (1, 14)


def test_fmt_command_rewrites_checks_and_names_unformatted_files(tmp_path: Path) -> None:
    messy, tidy = tmp_path / "messy.sdl", tmp_path / "tidy.sdl"
    messy.write_text("topic  t:int\n", encoding="utf-8")
    tidy.write_text("topic t: int\n", encoding="utf-8")
    checked = streamc("fmt", "--check", str(tmp_path))
    assert (checked.returncode, checked.stdout) == (1, f"would reformat {messy}\n")
    assert messy.read_text(encoding="utf-8") == "topic  t:int\n"
    assert streamc("fmt", str(messy)).returncode == 0
    assert messy.read_text(encoding="utf-8") == "topic t: int\n"
    assert streamc("fmt", "--check", str(messy), str(tidy)).returncode == 0
    assert streamc("fmt", stdin="app  a").stdout == "app a\n"


def test_fmt_command_leaves_a_file_it_cannot_format_alone(tmp_path: Path) -> None:
    broken, commented = tmp_path / "broken.sdl", tmp_path / "commented.sdl"
    broken.write_text("topic t: \n", encoding="utf-8")
    commented.write_text("topic # c\n t\n", encoding="utf-8")
    run = streamc("fmt", str(broken), str(commented))
    assert run.returncode == 1
    assert "error[E104]" in run.stderr
    assert f"{commented}:1:7: cannot format: a comment inside" in run.stderr
    assert broken.read_text(encoding="utf-8") == "topic t: \n"
    assert commented.read_text(encoding="utf-8") == "topic # c\n t\n"


# ---------------------------------------------------------------------------------------------
# Properties over generated programs

NAMES = ["a", "order", "`from`", "key", "to", "name", "x1", "Order", "total"]
names = st.sampled_from(NAMES)
types = st.sampled_from(["str", "int", "float?", "list[str]", "Order", "list[Order]?"])
exprs = st.sampled_from([
    "a > 1", "-a < -1.5", "not (b == null) and c != \"x y\"", "a.b.c % 2 == 0 or d",
    "(a + 1) * 2 >= 3 - -4", "true", "name == \"#not a comment\"",
])  # fmt: skip
ops = st.one_of(
    st.builds("process {}".format, names), st.builds("group_by {}".format, names),
    st.sampled_from(["take 10", "take 5 within 10s", "enumerate", "enumerate 3", "items",
                     "events", 'echo a, "b.c"', 'to "x.y"', 'through t']),
    st.builds("where {}".format, exprs), st.builds("filter {}".format, names),
    st.builds("sink {}".format, names),
)  # fmt: skip


@st.composite
def declarations(draw: st.DrawFn) -> list[list[str]]:
    """A program as declarations, each a list of lines: a comment may follow any line."""
    decls: list[list[str]] = [[f"app {draw(names)}"]]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["record", "topic", "hooks", "agent"]))
        if kind == "record":
            fields = [f"{draw(names)}: {draw(types)}" + draw(st.sampled_from(
                ["", " = 1", ' = "s"', " = []", " = null", " = -2.5"]))
                for _ in range(draw(st.integers(0, 4)))]  # fmt: skip
            decls.append([f"record {draw(names)} {{", *fields, "}"])
        elif kind == "topic":
            options = draw(st.lists(st.sampled_from(
                ["key str", "partitions 3", 'name "a.b"']), unique=True))  # fmt: skip
            value = draw(st.sampled_from(["", ": Order", ": list[int]"]))
            decls.append([" ".join([f"topic {draw(names)}{value}", *options])])
        elif kind == "hooks":
            sigs = [
                f"{draw(names)}({draw(types)}, int)"
                + draw(st.sampled_from(["", " -> bool", " -> (int, str)"]))
                for _ in range(draw(st.integers(0, 3)))
            ]
            decls.append(['hooks "h.py" {', *sigs, "}"])
        else:
            source = "from " + " & ".join(draw(st.lists(names, min_size=1, max_size=3)))
            steps = draw(st.lists(ops, max_size=6))
            decls.append([f"agent {draw(names)} =", source, *(f"| {s}" for s in steps)])
    return decls


def scatter(draw: st.DrawFn, line: str) -> str:
    """The line's tokens with random whitespace between them (never inside a token)."""
    tokens = [str(t) for t in lex(line) if t.type != "WS"]
    out = tokens[0]
    for tok in tokens[1:]:
        out += draw(st.sampled_from([" ", "  ", "\t", "\n", "\n    "]))
        out += tok
    return out


@st.composite
def laid_out(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A generated program in a random layout, with comments between its lines."""
    text, comments = "", []
    for decl in draw(declarations()):
        for line in decl:
            text += draw(st.sampled_from(["", " ", "\n\n", "\t"])) + line + \
                draw(st.sampled_from([" ", "\n", "\n\n"]))  # fmt: skip
            if draw(st.booleans()):
                comment = "# " + draw(st.text(st.characters(blacklist_categories=["Cc", "Cs"],
                                                            blacklist_characters="\u2028\u2029\x85"),
                                              max_size=8))  # fmt: skip
                comments.append(comment.rstrip())
                text += draw(st.sampled_from(["", "  ", "\n"])) + comment + "\n"
        text += draw(st.sampled_from(["\n", "\n\n\n"]))
    return text, comments


@st.composite
def scattered(draw: st.DrawFn) -> str:
    """A generated program with any token on a line of its own, no comments or blank lines."""
    return "\n".join(scatter(draw, line) for decl in draw(declarations()) for line in decl)


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(laid_out())
def test_formatting_keeps_meaning_and_every_comment_and_is_idempotent(
    case: tuple[str, list[str]],
) -> None:
    text, comments = case
    out = fmt(text)
    assert shape(parse(out, "p.sdl")) == shape(parse(text, "p.sdl"))
    assert [str(t).rstrip() for t in lex(out) if t.type == "COMMENT"] == comments
    assert fmt(out) == out


@PROPERTY
@given(scattered())
def test_any_layout_of_a_program_formats_to_the_same_text(text: str) -> None:
    out = fmt(text)
    assert shape(parse(out, "p.sdl")) == shape(parse(text, "p.sdl"))
    assert fmt(out) == out
    one_line = " ".join(str(t) for t in lex(text) if t.type != "WS")
    assert fmt(one_line) == out


def test_constructs_the_formatter_does_not_know_keep_their_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A declaration or operation added to the language later is laid out on one line when
    it is written on one, and kept as written, comments included, when it spans several."""
    monkeypatch.setattr("streamc.fmt._LINE_DECLS", (ast.AppDecl,))
    monkeypatch.setattr("streamc.fmt._KNOWN_OPS", (ast.ToOp,))
    text = (
        "topic  t:int   key str\n"
        "topic u # the name\n  :int\n"
        "agent a = from t\n  | where x >   1 # big\n      and y\n  | to u\n"
        "agent b = from t |  where  x>1 | to  u\n"
    )
    assert fmt(text) == (
        "topic t: int key str\n"
        "topic u # the name\n  :int\n"
        "agent a =\n    from t\n    | where x >   1 # big\n      and y\n    | to u\n"
        "agent b = from t | where x > 1 | to u\n"
    )
    assert fmt(fmt(text)) == fmt(text)
