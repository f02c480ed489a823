"""No input, however broken, makes the front end raise, hang or print a traceback.

Hypothesis feeds mutated copies of the sample, random text and random bytes; targeted tests
cover the classic parser killers (deep nesting, huge files, invalid UTF-8, binary junk).
Whatever comes in, the result is a program or a list of well-formed diagnostics that render.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc import ir
from streamc.checker import check
from streamc.diagnostics import CODES, Diagnostic, DiagnosticError, render
from streamc.loader import load
from streamc.parser import parse

from .conftest import SAMPLES

SAMPLE = (SAMPLES / "orders.sdl").read_text(encoding="utf-8")
HOOKS = (SAMPLES / "hooks.py").read_text(encoding="utf-8")

# Pieces a mutation may splice in: the language's own words and punctuation, so mutations
# reach deep into the grammar and the checker instead of failing at the first character.
TOKENS = [
    "app", "record", "topic", "hooks", "agent", "from", "key", "partitions", "name", "process",
    "group_by", "take", "within", "enumerate", "through", "echo", "items", "events", "where",
    "filter", "to", "sink", "and", "or", "not", "null", "true", "false", "|", "&", ",", ".",
    ":", "=", "->", "(", ")", "[", "]", "{", "}", "?", "==", "<", "+", "-", "%", "/",
    "Order", "orders", "account_id", "amount", "str", "int", "list[str]", "Event[str, Order]",
    "any", "(int, Order)", "10s", "0ms", "0", "100", "-1", "1.5", '"x"', '"a b"', "`from`",
    "totals", "customer.country", "print_batch", "add_default_language", "\n", " ", "#",
]  # fmt: skip


def front_end(text: str, hooks: str | None = HOOKS) -> ir.Program | list[Diagnostic]:
    try:
        module = parse(text, "orders.sdl")
    except DiagnosticError as e:
        return e.diagnostics
    result = check(module, {"hooks.py": hooks})
    return result.program if result.program is not None else list(result.diagnostics)


def assert_clean(result: ir.Program | list[Diagnostic], text: str) -> None:
    if isinstance(result, ir.Program):
        return
    assert result, "a failed check must say why"
    for d in result:
        assert d.code in CODES
        assert d.severity == "error"
        assert d.line >= 0 and d.col >= 0
    rendered = render(result, {"orders.sdl": text, "hooks.py": HOOKS})
    assert rendered.count("error[") == len(result)


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    text = SAMPLE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "token"]))
        if kind == "delete":
            end = min(len(text), pos + draw(st.integers(1, 30)))
            text = text[:pos] + text[end:]
        elif kind == "insert":
            text = text[:pos] + draw(st.text(max_size=5)) + text[pos:]
        elif kind == "replace":
            text = text[:pos] + draw(st.text(min_size=1, max_size=3)) + text[pos + 1 :]
        else:
            text = text[:pos] + " " + draw(st.sampled_from(TOKENS)) + " " + text[pos:]
    return text


FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@FUZZ
@given(mutated_sample())
def test_mutated_sample(text: str) -> None:
    assert_clean(front_end(text), text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup(text: str) -> None:
    assert_clean(front_end(text), text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    assert_clean(front_end(text), text)


@settings(max_examples=100, deadline=None)
@given(mutated_sample(), st.text(max_size=200))
def test_random_hooks_module(text: str, hooks: str) -> None:
    assert_clean(front_end(SAMPLE, hooks), SAMPLE)
    assert_clean(front_end(text, None), text)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.sdl"
    path.write_bytes(data)
    result = load(path)
    assert result.program is not None or result.diagnostics
    render(result.diagnostics, result.sources)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n\n",
        "\x00\x01\x02",
        "\ufeffapp x",
        "(" * 10_000,
        "record R { a: int }\ntopic t: R\nagent x = from t | where "
        + "(" * 10_000
        + "a > 1"
        + ")" * 10_000,
        "record R { a: int }\ntopic t: R\nagent x = from t | where " + "(" * 10_000,
        "record R { a: int }\ntopic t: R\nagent x = from t | where "
        + "(a + " * 5_000
        + "1"
        + ")" * 5_000
        + " > 1",
        "record R { a: int }\ntopic t: R\nagent x = from t | where a"
        + " + a" * 20_000
        + " > 1",
        "record R { a: int }\ntopic t: R\nagent x = from t | where "
        + "not " * 20_000
        + "true",
        "record R { a: int }\ntopic t: R\nagent x = from t | where "
        + "- " * 20_000
        + "a > 1",
        'hooks "h.py" { f(' + "list[" * 5_000 + "int" + "]" * 5_000 + ") }",
        "record R { a: " + "list[" * 5_000 + "int" + "]" * 5_000 + " }",
        "record R { a: int = " + "9" * 100_000 + " }",
        "agent x = from t | take " + "9" * 100_000,
        "agent x = from t | take 1 within " + "9" * 100_000 + "s",
        'topic t name "' + "a" * 100_000 + '"',
        "x" * 1_000_000,
        "# " + "x" * 1_000_000,
        "\t\r\f\v\u2028\u2029\x85 app x",
    ],
    ids=lambda t: repr(t[:20]) + f"..{len(t)}",
)
def test_parser_killers(text: str) -> None:
    assert_clean(front_end(text), text)


def test_huge_valid_file() -> None:
    records = "".join(f"record R{i} {{ a: str  n: int  x: R{i - 1}? }}\n" if i else
                      "record R0 { a: str  n: int }\n" for i in range(300))  # fmt: skip
    topics = "".join(f"topic t{i}: R{i} key str partitions 3\n" for i in range(300))
    agents = "".join(
        f'agent a{i} = from t{i % 300} | where n > {i} and a != "x" | group_by a '
        f'| take 10 within 1s | through "out-{i}"\n'
        for i in range(3_000)
    )
    result = front_end(records + topics + agents)
    assert isinstance(result, ir.Program)
    assert len(result.agents) == 3_000
    # Records nest a chain 300 deep: ordering them must not recurse per level.
    assert [r.name for r in result.records[:3]] == ["R0", "R1", "R2"]


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.sdl"
    path.write_bytes(SAMPLE.encode()[:200] + b"\xc3\x28" + SAMPLE.encode()[200:])
    result = load(path)
    assert [d.code for d in result.diagnostics] == ["E101"]
    assert "\ufffd" in render(result.diagnostics, result.sources)


def test_deeply_nested_record_chain() -> None:
    text = "record R0 { a: int }\n" + "".join(
        f"record R{i} {{ x: R{i - 1}? }}\n" for i in range(1, 5_000)
    )
    result = front_end(text + "record Z { z: R4999  again: Z? }\n")
    assert not isinstance(result, ir.Program)
    assert [d.code for d in result] == ["E313"]
