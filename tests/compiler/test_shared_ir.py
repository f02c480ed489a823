"""Agents that repeat a condition share its checked form, and only where that is sound: the
same words on the same record, checked without error."""

from __future__ import annotations

from streamc import ir
from streamc.checker import check
from streamc.parser import parse

RECORDS = (
    "record A { amount: int  n: int? }\nrecord B { amount: str  n: int? }\n"
    "topic a: A key str\ntopic b: B key str\n"
)


def _check(text: str) -> ir.Program | list[tuple[str, int, str]]:
    result = check(parse(text, "t.sdl"), {})
    if result.program is not None:
        return result.program
    return [(d.code, d.line, d.message) for d in result.diagnostics]


def _where(agent: ir.Agent) -> ir.Where:
    where = agent.ops[0]
    assert isinstance(where, ir.Where)
    return where


def test_same_condition_on_the_same_record_is_checked_once_and_shared() -> None:
    program = _check(
        RECORDS + "agent x = from a | where n != null and n > 1  # narrowed\n"
        "agent y = from a | where n  !=  null and n > 1\n"
    )
    assert isinstance(program, ir.Program)
    x, y = (_where(agent) for agent in program.agents)
    assert x.expr is y.expr
    assert x.text == y.text == "n != null and n > 1"
    alone = _check(RECORDS + "agent y = from a | where n != null and n > 1\n")
    assert isinstance(alone, ir.Program)
    assert _where(alone.agents[0]).expr == y.expr


def test_same_words_on_another_record_are_checked_again() -> None:
    assert _check(
        RECORDS + "agent x = from a | where amount > 1\nagent y = from b | where amount > 1\n"
    ) == [("E310", 6, "cannot compare str with int using '>'")]


def test_a_repeated_broken_condition_is_reported_at_each_use() -> None:
    assert _check(
        RECORDS + "agent x = from a | where n > 1\nagent y = from a | where n > 1\n"
    ) == [
        ("E310", 5, "cannot compare int? with int using '>'"),
        ("E310", 6, "cannot compare int? with int using '>'"),
    ]
