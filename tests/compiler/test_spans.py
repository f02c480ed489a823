"""Spans are packed into one int: every set of six numbers reads back as given, equal numbers
give equal spans, and joining two spans keeps the start of one and the end of the other."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from streamc.diagnostics import Span

# Small values, and values at or past the bounds of the one-line packing (the wider one holds
# lines and columns below 2**32 and offsets below 2**48).
numbers = st.one_of(
    st.integers(0, 300), st.sampled_from([(1 << 24) - 1, 1 << 24, (1 << 32) - 1, 1 << 31])
)

# Lines and columns, from small to past the one-line packing.
columns = st.one_of(st.integers(0, 300), st.sampled_from([(1 << 24) - 20, 1 << 24]))


@given(numbers, numbers, numbers, numbers, numbers, numbers)
def test_span_reads_back_the_numbers_it_was_made_of(
    line: int, col: int, end_line: int, end_col: int, start: int, end: int
) -> None:
    span = Span(line, col, end_line, end_col, start, end)
    assert (span.line, span.col, span.end_line, span.end_col, span.start, span.end) == (
        line, col, end_line, end_col, start, end,
    )  # fmt: skip
    assert span == Span(line, col, end_line, end_col, start, end)
    assert span != Span(line, col, end_line, end_col, start, end + 1)
    assert pickle.loads(pickle.dumps(span)) == span == copy.deepcopy(span)
    assert bool(span)


@given(columns, columns, st.integers(0, 50), columns, st.integers(0, 50), st.booleans())
def test_joined_span_runs_from_the_first_start_to_the_second_end(
    line: int, col: int, length: int, gap: int, other_length: int, same_line: bool
) -> None:
    start = col + 1000  # the line begins at offset 999
    first = Span(line, col, line, col + length, start, start + length)
    other_line = line if same_line else line + 1
    other_col = col + length + gap if same_line else gap
    other_start = start + length + gap if same_line else start + length + 1 + gap
    second = Span(other_line, other_col, other_line, other_col + other_length, other_start,
                  other_start + other_length)  # fmt: skip
    joined = first.to(second)
    assert joined == Span(line, col, other_line, other_col + other_length, start,
                          other_start + other_length)  # fmt: skip
    assert (joined.start, joined.end, joined.end_line) == (
        start, other_start + other_length, other_line,
    )  # fmt: skip


def test_span_repr_names_its_numbers() -> None:
    assert repr(Span(1, 2, 1, 5, 10, 13)) == (
        "Span(line=1, col=2, end_line=1, end_col=5, start=10, end=13)"
    )


def test_span_past_its_packing_is_refused_rather_than_garbled() -> None:
    with pytest.raises(ValueError, match="span out of range"):
        Span(1, 1 << 32, 2, 1, 0, 0)
