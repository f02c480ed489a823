"""The fast parsing path builds exactly the tree Lark's own lexer and parser build, and
gives up on exactly the texts Lark refuses (which `parse` then reports through Lark)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput
from streamc.parser import _AstError, _fast_parser, _lark, _Mismatch

from .conftest import SAMPLES
from .test_fuzz import FUZZ, TOKENS, mutated_sample

MANY = "".join(
    f"record R{i} {{ id: str  n: int = {i}  p: R{i - 1}? }}\ntopic t{i}: R{i} key str\n"
    f"agent a{i} = from t{i} & t{i} | where p.n > {i} and id != \"{i}\" | group_by id "
    f"| take {i + 1} within {i}ms | to t{i}\n"
    for i in range(1, 40)
)


def both(text: str) -> tuple[Any, Any]:
    try:
        slow: Any = _lark().parse(text)
    except (UnexpectedInput, _AstError):
        slow = "refused"
    try:
        fast: Any = _fast_parser().parse(text)
    except (_Mismatch, _AstError):
        fast = "refused"
    return fast, slow


@pytest.mark.parametrize(
    "text",
    [
        (SAMPLES / "orders.sdl").read_text(encoding="utf-8"),
        MANY,
        # words that are keywords in one place and names in another, glued and backquoted
        "record R { key: str  name: int  to: float  `from`: bool  take2: str }\n"
        "topic t: R key str partitions 4 name \"t.v1\"\n"
        "agent to = from t | where `from` and name >= -1 or not (to < 1.5e3)"
        " and take2 != \"\\\"\"\n"
        "  | take 10 within 1.5s | enumerate -3 | echo t, \"x\"  # a comment\n",
        "agent a = from t|take 3 within 500ms|to\"out\"#c\r\n|items",
        "record R { a: int = -1  b: float = 2e3  c: list[int] = [1, -2]  d: (int, R)? }",
    ],
)
def test_fast_path_builds_the_same_tree_as_lark(text: str) -> None:
    fast, slow = both(text)
    assert slow != "refused"
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    ["agent a = from t | take 10s", "agent a = from t | tout", "record R { a: int $ }",
     "agent a = from t | take 1.5", "topic t partitions 1.5s", 'agent a = "x'],
)  # fmt: skip
def test_fast_path_gives_up_where_lark_refuses(text: str) -> None:
    assert both(text) == ("refused", "refused")


@FUZZ
@given(mutated_sample())
def test_fast_path_agrees_with_lark_on_mutated_samples(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_fast_path_agrees_with_lark_on_token_soup(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow
