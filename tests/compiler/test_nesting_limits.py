"""Depth limits count real nesting: a flat `or` chain is one level however long, while every
field of a path counts, since the generated Python nests attribute accesses."""

from __future__ import annotations

import ast as pyast
from pathlib import PurePosixPath

from streamc import ir
from streamc.checker import check
from streamc.diagnostics import DiagnosticError
from streamc.emit import emit
from streamc.parser import MAX_EXPR_DEPTH, parse

HEAD = "record Order { id: str  n: int?  amount: int }\ntopic orders: Order key str\n"


def _program(text: str) -> ir.Program:
    program = check(parse(text, "t.sdl"), {}).program
    assert isinstance(program, ir.Program)
    return program


def _syntax_errors(text: str) -> list[tuple[str, int, int, str]]:
    try:
        parse(text, "t.sdl")
    except DiagnosticError as e:
        return [(d.code, d.line, d.col, d.message) for d in e.diagnostics]
    raise AssertionError("parsed")


def _agent_module(program: ir.Program) -> str:
    return emit(program)[PurePosixPath("t_worker/agents/a.py")]


def test_flat_or_chain_of_thousands_of_terms_checks_and_compiles() -> None:
    terms = " or ".join(f'id == "{i}"' for i in range(3000))
    program = _program(f"app t\n{HEAD}agent a = from orders | where {terms} | to \"out\"\n")
    where = program.agents[0].ops[0]
    assert isinstance(where, ir.Where)
    # The checker kept every term, left to right.
    rights = []
    node: ir.Expr = where.expr
    while isinstance(node, ir.Binary) and node.op == "or":
        rights.append(node.right)
        node = node.left
    assert len(rights) == 2999
    # One flat `or` in the generated Python, which compiles however long it is.
    tree = pyast.parse(_agent_module(program))
    chains = [n for n in pyast.walk(tree) if isinstance(n, pyast.BoolOp)]
    assert [len(n.values) for n in chains] == [3000]
    compile(tree, "a.py", "exec")


def test_null_test_early_in_a_long_and_chain_narrows_its_last_term() -> None:
    middle = " and ".join("amount > 1" for _ in range(2000))
    program = _program(f"{HEAD}agent a = from orders | where n != null and {middle} and n > 2\n")
    assert program.agents[0].name == "a"


def test_alternating_operators_nest_and_chains_inside_them_do_not() -> None:
    chain = " or ".join(["amount > 1"] * 150)
    assert _program(f"{HEAD}agent a = from orders | where not ({chain}) and ({chain})\n")
    nested = "amount > 1"
    for _ in range(45):  # each round nests an `or` and an `and`: 92 levels
        nested = f"amount > 1 or ({nested}) and {chain}"
    assert _program(f"{HEAD}agent a = from orders | where {nested}\n")
    for _ in range(5):  # 102 levels
        nested = f"amount > 1 or ({nested}) and amount > 2"
    text = f"{HEAD}agent a = from orders | where {nested}\n"
    assert [code for code, *_ in _syntax_errors(text)] == ["E107"]


def test_field_path_longer_than_the_limit_is_refused_in_where_and_group_by() -> None:
    path = ".".join(["n"] * (MAX_EXPR_DEPTH + 1))
    text = (
        f"{HEAD}agent a = from orders | where {path} > 1\n"
        f"agent b = from orders | group_by {path}\n"
    )
    assert _syntax_errors(text) == [
        ("E107", 3, 31, f"field path is more than {MAX_EXPR_DEPTH} fields long"),
        ("E107", 4, 34, f"field path is more than {MAX_EXPR_DEPTH} fields long"),
    ]


def test_field_path_length_adds_to_the_expression_depth() -> None:
    nots = "not " * (MAX_EXPR_DEPTH - 3)
    ok = f"{HEAD}agent a = from orders | where {nots}c.d == 1\n"
    try:
        parse(ok, "t.sdl")
    except DiagnosticError as e:
        raise AssertionError(e.diagnostics) from None
    too_deep = f"{HEAD}agent a = from orders | where {nots}c.d.e == 1\n"
    assert [code for code, *_ in _syntax_errors(too_deep)] == ["E107"]


def test_longest_field_paths_allowed_compile() -> None:
    last = MAX_EXPR_DEPTH - 1
    records = "".join(
        f"record R{i} {{ n: R{i + 1}  o: R{i + 1}?  z: bool }}\n" for i in range(last)
    )
    records += f"record R{last} {{ y: str }}\n"
    plain = ".".join(["n"] * last + ["y"])
    null_safe = ".".join(["o"] * (last - 1) + ["z"]) + " == true"  # 99 fields and a comparison
    program = _program(
        f"app t\n{records}topic t: R0 key str\nagent a = from t | where {null_safe} "
        f"| to \"out\"\nagent b = from t | group_by {plain} | to \"out2\"\n"
    )
    for path, text in emit(program).items():
        if path.suffix == ".py":
            compile(text, str(path), "exec")
