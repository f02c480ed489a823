"""Names and literals that reach generated code are always safe and always faithful."""

from __future__ import annotations

import ast
import builtins
import keyword

from hypothesis import given
from hypothesis import strategies as st
from streamc.naming import KEYWORDS, Namer, doc_text, identifier, py_literal


def test_plain_names_are_kept() -> None:
    namer = Namer()
    assert [namer.claim(n) for n in ("orders", "account_id", "Order")] == [
        "orders",
        "account_id",
        "Order",
    ]


def test_keywords_builtins_and_generated_names_get_an_underscore() -> None:
    namer = Namer()
    assert namer.claim("class") == "class_"
    assert namer.claim("list") == "list_"
    assert namer.claim("match") == "match_"
    assert namer.claim("app") == "app_"
    assert namer.claim("__init__") == "init"


def test_clashes_get_a_suffix() -> None:
    namer = Namer()
    assert [namer.claim(n) for n in ("audit.all", "audit-all", "audit_all")] == [
        "audit_all",
        "audit_all_2",
        "audit_all_3",
    ]


def test_field_names_only_avoid_what_a_class_body_uses() -> None:
    namer = Namer(unsafe=KEYWORDS | {"str"})
    assert namer.claim("id") == "id"
    assert namer.claim("match") == "match_"  # a soft keyword
    assert namer.claim("type") == "type"  # fine as an annotated name on every Python
    assert namer.claim("str") == "str_"


@given(st.text(max_size=30))
def test_any_text_becomes_a_usable_identifier(text: str) -> None:
    name = Namer().claim(text)
    assert name.isidentifier() and name.isascii()
    assert not keyword.iskeyword(name) and not keyword.issoftkeyword(name)
    assert name not in dir(builtins)
    assert identifier(text).isidentifier()


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)


@given(SCALARS)
def test_literals_evaluate_to_their_value(value: object) -> None:
    text = py_literal(value)
    result = eval(text, {"float": float})
    if isinstance(value, float) and value != value:
        assert result != result
    else:
        assert result == value and type(result) is type(value)


@given(st.text())
def test_docstring_text_reads_back_exactly(text: str) -> None:
    source = f'"""{doc_text(text)} """'
    tree = ast.parse(source)
    value = tree.body[0].value  # type: ignore[attr-defined]
    assert value.value == text + " "
    assert "\n" not in source and "\r" not in source
