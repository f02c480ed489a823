"""The front end on the showcase sample and on targeted inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamc import ast, ir
from streamc.checker import check
from streamc.diagnostics import Diagnostic, DiagnosticError, Span, render
from streamc.loader import load
from streamc.parser import parse

from .conftest import SAMPLES


def check_text(
    text: str, hooks: str | None = None, filename: str = "t.sdl"
) -> ir.Program:
    result = check(parse(text, filename), {"hooks.py": hooks})
    assert result.program is not None, render(result.diagnostics, {filename: text})
    return result.program


def diagnostics_of(text: str, hooks: str | None = None) -> list[Diagnostic]:
    try:
        module = parse(text, "t.sdl")
    except DiagnosticError as e:
        return e.diagnostics
    result = check(module, {"hooks.py": hooks})
    assert result.program is None
    return list(result.diagnostics)


# ---------------------------------------------------------------------------------------------
# The sample


def test_sample_checks_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLES.parent)
    result = load(Path("samples/orders.sdl"))
    assert result.diagnostics == []
    program = result.program
    assert program is not None
    assert program.app == "orders"
    assert program.source_name == "orders.sdl"
    assert [r.name for r in program.records] == [
        "Customer", "Order", "AccountTotals", "AccountMinute", "Account", "EnrichedOrder",
        "Payment", "PaidOrder", "Withdrawal"
    ]  # fmt: skip
    assert [(t.name, t.partitions, t.changelog, t.window) for t in program.tables] == [
        ("totals_by_account", 4, "orders-totals_by_account-changelog", None),
        ("minutes_by_account", 4, "orders-minutes_by_account-changelog",
         ir.Window("tumbling", 60_000, None, 10_000, "tumbling 1m grace 10s")),
        ("accounts_by_id", 4, "accounts", None),  # over topic accounts, its changelog
    ]  # fmt: skip
    assert [(t.source, t.global_) for t in program.tables][-1] == ("accounts", False)
    assert program.hook_modules[0].module == "hooks"
    assert program.hook_modules[0].text == (SAMPLES / "hooks.py").read_text(
        encoding="utf-8"
    )
    assert program.hook("add_client_info").is_async
    assert program.hook("handle_refund").is_async
    assert not program.hook("add_default_language").is_async


def test_sample_uses_every_operation() -> None:
    result = load(SAMPLES / "orders.sdl")
    assert result.program is not None
    kinds = {type(op) for agent in result.program.agents for op in agent.ops}
    assert kinds == {
        ir.Aggregate,
        ir.Process,
        ir.GroupBy,
        ir.Take,
        ir.Enumerate,
        ir.Through,
        ir.Echo,
        ir.Where,
        ir.Filter,
        ir.Items,
        ir.Events,
        ir.To,
        ir.Sink,
        ir.Join,
        ir.JoinStream,
        ir.Select,
    }
    assert any(len(agent.sources) > 1 for agent in result.program.agents)  # `&`


def test_design_card_pipeline() -> None:
    result = load(SAMPLES / "orders.sdl")
    assert result.program is not None
    totals = next(a for a in result.program.agents if a.name == "totals")
    assert (
        totals.text
        == "from orders | group_by account_id | take 100 within 10s | through totals"
    )
    order = ir.RecordType("Order")
    assert totals.ops == (
        ir.GroupBy(
            ("account_id",),
            None,
            "orders-totals-orders-account_id-repartition",
            order,
            ir.STR,
        ),
        ir.Take(100, 10.0, ir.ListType(order), ir.STR),
        ir.Through("totals", ir.ListType(order), ir.STR),
    )
    repart = result.program.topic("orders-totals-orders-account_id-repartition")
    assert repart.kind == "repartition"
    assert repart.partitions == 4
    assert repart.kafka_name == repart.name


# ---------------------------------------------------------------------------------------------
# Misspelling every field, topic and hook of the sample


def _names_used(module: ast.Module) -> list[tuple[ast.Name, str]]:
    """Every name the sample uses, with the code a misspelling of it must get."""
    found: list[tuple[ast.Name, str]] = []

    def expr_names(e: ast.Expr) -> None:
        if isinstance(e, ast.FieldPath):
            found.extend((n, "E201") for n in e.names)
        elif isinstance(e, ast.UnaryExpr):
            expr_names(e.operand)
        elif isinstance(e, ast.BinaryExpr):
            expr_names(e.left)
            expr_names(e.right)

    for decl in module.decls:
        if isinstance(decl, ast.HooksDecl):
            found.extend((sig.name, "E205") for sig in decl.hooks)
        if not isinstance(decl, ast.AgentDecl):
            continue
        found.extend((n, "E203") for n in decl.source.topics)
        for op in decl.ops:
            if isinstance(op, ast.ProcessOp):
                found.extend((n, "E204") for n in op.hooks)
            elif isinstance(op, ast.FilterOp | ast.SinkOp):
                found.append((op.hook, "E204"))
            elif isinstance(op, ast.GroupByOp):
                found.extend((n, "E201") for n in op.path)  # a misspelled key hook too
            elif isinstance(op, ast.ThroughOp | ast.ToOp) and isinstance(
                op.topic, ast.Name
            ):
                found.append((op.topic, "E203"))
            elif isinstance(op, ast.EchoOp):
                found.extend((t, "E203") for t in op.topics if isinstance(t, ast.Name))
            elif isinstance(op, ast.WhereOp):
                expr_names(op.expr)
    return found


_SAMPLE = (SAMPLES / "orders.sdl").read_text(encoding="utf-8")
_HOOKS = (SAMPLES / "hooks.py").read_text(encoding="utf-8")
_USES = _names_used(parse(_SAMPLE, "orders.sdl"))


def _misspell(word: str) -> str:
    # Drop one letter from the middle: close enough for a did-you-mean, never another name.
    i = len(word) // 2
    return word[:i] + word[i + 1 :]


@pytest.mark.parametrize(
    ("name", "code"),
    _USES,
    ids=[f"{n.text}@{n.span.line}:{n.span.col}" for n, _ in _USES],
)
def test_misspelling_is_reported_where_it_is(name: ast.Name, code: str) -> None:
    wrong = _misspell(name.text)
    text = _SAMPLE[: name.span.start] + wrong + _SAMPLE[name.span.end :]
    module = parse(text, "orders.sdl")
    result = list(check(module, {"hooks.py": _HOOKS}).diagnostics)
    here = [d for d in result if (d.line, d.col) == (name.span.line, name.span.col)]
    assert here, render(result, {"orders.sdl": text})
    d = here[0]
    assert d.code == code
    assert d.end_col == name.span.col + len(wrong)
    # `group_by` takes a field or a hook, so its hint says which kind it suggests.
    hints = [h.replace("the field ", "").replace("the hook ", "") for h in d.hints]
    assert f"did you mean '{name.text}'?" in hints


def test_misspelled_declarations_are_suggested_at_their_uses() -> None:
    for before, after, code in [
        ("    account_id: str\n", "    acount_id: str\n", "E201"),
        ("topic withdrawals:", "topic withdrawal:", "E203"),
    ]:
        text = _SAMPLE.replace(before, after, 1)
        result = list(check(parse(text, "orders.sdl"), {"hooks.py": _HOOKS}).errors)
        assert {d.code for d in result} == {code}
        assert all(d.hints for d in result)


# ---------------------------------------------------------------------------------------------
# Names, keywords and syntax


def test_keywords_and_python_names_as_field_and_topic_names() -> None:
    program = check_text(
        "record R { key: str name: str to: int `from`: str class: int type: str list: int "
        "id: str partitions: int }\n"
        "topic class: R key str\n"
        'topic `from`: R key str name "from"\n'
        "agent type = from class | where `from` == name and class > 1 | group_by key "
        "| to `from`\n"
    )
    assert [f.name for f in program.records[0].fields][:4] == [
        "key",
        "name",
        "to",
        "from",
    ]
    assert program.agents[0].sources == ("class",)
    where = program.agents[0].ops[0]
    assert isinstance(where, ir.Where)
    assert where.text == "`from` == name and class > 1"


def test_layout_is_free_and_comments_are_ignored() -> None:
    one = check_text(
        "record R { a: int }\ntopic t: R key str\nagent x = from t | take 2 | "
        "enumerate 5\n"
    )
    many = check_text(
        "record R {\n  a: int # why\n}\ntopic t: R\n  key str # k\n"
        "agent x =\n  from t  # source\n  | take 2\n\n  | enumerate 5\n"
    )
    assert one.agents[0].ops == many.agents[0].ops
    assert many.agents[0].text == "from t | take 2 | enumerate 5"


def test_defaults_and_types_in_the_ir() -> None:
    program = check_text(
        "record R { a: float = 1  b: list[int]? = [1, -2]  c: str? = null  d: bool = true "
        "e: bytes }\n"
    )
    fields = {f.name: f for f in program.records[0].fields}
    assert fields["a"].default == ir.Default(1.0)
    assert isinstance(fields["a"].default.value, float)
    assert fields["b"].type == ir.OptionalType(ir.ListType(ir.INT))
    assert fields["b"].default == ir.Default((1, -2))
    assert fields["c"].default == ir.Default(None)
    assert fields["e"].default is None


def test_records_are_ordered_nested_first() -> None:
    program = check_text(
        "record A { b: B  c: list[C] }\nrecord B { c: C? }\nrecord C { x: int }\n"
    )
    assert [r.name for r in program.records] == ["C", "B", "A"]


def test_topics_default_to_bytes_and_one_partition() -> None:
    program = check_text("topic raw\n")
    assert program.topics == (
        ir.Topic("raw", "raw", ir.BYTES, ir.BYTES, 1, "declared"),
    )


def test_where_types_and_null() -> None:
    program = check_text(
        "record C { country: str? }\nrecord R { a: int  b: float  c: C?  s: str }\n"
        "topic t: R key str\n"
        "agent x = from t | where -a % 2 == 0 and a / 2 > b and c.country != null "
        'or s + "x" == "yx"\n'
    )
    where = program.agents[0].ops[0]
    assert isinstance(where, ir.Where)
    expr = where.expr
    assert isinstance(expr, ir.Binary) and expr.op == "or"
    inner = expr.left
    assert isinstance(inner, ir.Binary) and isinstance(inner.right, ir.Binary)
    null_cmp = inner.right
    assert null_cmp.left == ir.FieldRef(("c", "country"), ir.OptionalType(ir.STR))
    assert null_cmp.right == ir.Const(None, ir.OptionalType(ir.STR))


def test_implicit_topics_take_the_stream_types() -> None:
    program = check_text(
        "record R { a: str }\ntopic t: R key str partitions 3\n"
        'agent x = from t | group_by a | take 5 within 500ms | echo "batches" | to "b2"\n'
    )
    batches = program.topic("batches")
    assert batches == ir.Topic(
        "batches", "batches", ir.STR, ir.ListType(ir.RecordType("R")), 3, "implicit"
    )
    take = program.agents[0].ops[1]
    assert isinstance(take, ir.Take) and take.within_seconds == 0.5
    assert [t.kind for t in program.topics] == [
        "declared",
        "implicit",
        "implicit",
        "repartition",
    ]


def test_string_naming_a_declared_kafka_topic_is_that_topic() -> None:
    program = check_text(
        'record R { a: str }\ntopic t: R key str\ntopic audit: R key str name "audit.v1"\n'
        'agent x = from t | echo "audit.v1"\n'
    )
    assert program.agents[0].ops[0] == ir.Echo(("audit",), ir.RecordType("R"), ir.STR)
    assert len(program.topics) == 2


def test_joined_sources_name_the_repartition_topic() -> None:
    program = check_text(
        "record R { a: str }\ntopic t: R key str partitions 2\ntopic u: R key str "
        "partitions 6\nagent x = from t & u | group_by a\n"
    )
    group_by = program.agents[0].ops[0]
    assert isinstance(group_by, ir.GroupBy)
    assert group_by.topic == "t-x-t.u-a-repartition"
    assert program.topic(group_by.topic).partitions == 6



def test_every_kafka_name_the_program_makes_fits_kafka() -> None:
    app = "a" * 246  # the dead-letter topic "<app>-dlq" would be 250 characters
    [dlq] = diagnostics_of(f"app {app}\ntopic t\n")
    assert (dlq.code, dlq.line, dlq.col) == ("E210", 1, 5)
    assert dlq.message == (
        f"the dead-letter topic would be named '{app}-dlq', which is 250 characters long, "
        "more than Kafka's 249"
    )
    assert dlq.hints[-1] == "shorten the app name"
    assert check_text(f"app {'a' * 245}\ntopic t\n").topics[0].kafka_name == "t"
    topic = "t" * 250  # a declared topic is named after itself unless `name` says otherwise
    [long_topic] = diagnostics_of(f"topic {topic}\n")
    assert (long_topic.code, long_topic.col) == ("E210", 7)
    assert check_text(f'topic {topic} name "short"\n').topics[0].kafka_name == "short"


HOOKS = """
import asyncio

def key_of(x): return x.a
async def pair(n, r): await asyncio.sleep(0)
def anything(x, *rest): return None
def with_default(x, y=1): return True
"""


def test_hooks_any_unpacking_and_async() -> None:
    program = check_text(
        "record R { a: str }\ntopic t: R key str\n"
        'hooks "hooks.py" { key_of(R) -> int  pair(int, R)  anything(any)  '
        "with_default(R) -> bool }\n"
        "agent x = from t | filter with_default | group_by key_of | enumerate | sink pair\n"
        "agent y = from t | events | sink anything\n",
        HOOKS,
    )
    x = program.agents[0]
    assert x.ops[1] == ir.GroupBy(
        None, "key_of", "t-x-t-key_of-repartition", ir.RecordType("R"), ir.INT
    )
    sink = x.ops[3]
    assert isinstance(sink, ir.Sink) and sink.unpack
    assert program.hook("pair").is_async
    y_sink = program.agents[1].ops[1]
    assert isinstance(y_sink, ir.Sink) and not y_sink.unpack
    assert y_sink.out == ir.EventType(ir.STR, ir.RecordType("R"))


def test_every_error_is_reported_in_one_run() -> None:
    codes = [
        d.code
        for d in diagnostics_of(
            "record R { a: flaot }\ntopic t: R key str\ntopic t2: Q\n"
            "agent x = from t | take 0 | through nowhere\nagent y = from tt\n"
        )
    ]
    assert codes == ["E202", "E202", "E306", "E203", "E203"]


def test_syntax_error_is_a_diagnostic_error() -> None:
    with pytest.raises(DiagnosticError) as info:
        parse("agent x = from t | take", "t.sdl")
    [d] = info.value.diagnostics
    assert d.code == "E104"
    assert "end of file" in d.message


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("topic t key str partitons 3", "E106", "did you mean 'partitions'?"),
        ("agent x = from t | procss f", "E106", "did you mean 'process'?"),
        ("agnet x = from t", "E106", "did you mean 'agent'?"),
        ("agent x = from t | take 3 withn 1s", "E106", "did you mean 'within'?"),
        ("record R { a: int", "E104", "expected"),
        ("record", "E104", "a record name"),
        ("agent x = from t | take 10 within 5", "E108", "write 5s"),
        ("agent x = from t | where a == 'x'", "E102", "expected an expression"),
        ('topic t key str name "x', "E105", ""),
        ("record R { a: int = 99999999999999999999999999999999999 }", "E108", ""),
    ],
)
def test_syntax_messages(text: str, code: str, needle: str) -> None:
    [d] = diagnostics_of(text)
    assert d.code == code
    assert needle in d.message + " ".join(d.hints)
    assert "$END" not in d.message and "__ANON" not in d.message
    assert not any(term in d.message for term in ("NAME", "STRING", "DURATION", "LPAR"))


# ---------------------------------------------------------------------------------------------
# Rendering and the loader


def test_render_matches_the_contract() -> None:
    text = "\n" * 6 + "from orders | group_by acount_id\n"
    d = Diagnostic.error(
        "samples/orders.sdl",
        Span(7, 24, 7, 33, 0, 0),
        "E201",
        "record Order has no field 'acount_id'",
        ["did you mean 'account_id'?"],
    )
    assert render([d], {"samples/orders.sdl": text}) == (
        "samples/orders.sdl:7:24: error[E201]: record Order has no field 'acount_id'\n"
        "    | from orders | group_by acount_id\n"
        "    |                        ^^^^^^^^^\n"
        "hint: did you mean 'account_id'?\n"
    )


def test_loader_reports_unreadable_files(tmp_path: Path) -> None:
    missing = load(tmp_path / "nope.sdl")
    assert [d.code for d in missing.diagnostics] == ["E100"]
    assert render(missing.diagnostics, missing.sources).startswith(
        f"{tmp_path}/nope.sdl: error"
    )
    folder = load(tmp_path)
    assert [d.code for d in folder.diagnostics] == ["E100"]


def test_loader_reads_hooks_next_to_the_sdl(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "h.py").write_text("async def f(x): pass\n")
    (tmp_path / "a.sdl").write_text(
        'topic t\nhooks "sub/h.py" { f(bytes) }\n' "agent x = from t | sink f\n"
    )
    result = load(tmp_path / "a.sdl")
    assert result.diagnostics == []
    assert result.program is not None
    assert result.program.hook_modules == (
        ir.HookModule("h", "sub/h.py", "async def f(x): pass\n"),
    )
    assert str(tmp_path / "sub/h.py") in result.sources


def test_hooks_module_with_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_bytes(b"def f(x):\n    return '\xff'\n")
    (tmp_path / "a.sdl").write_text('topic t\nhooks "hooks.py" { f(bytes) }\n')
    result = load(tmp_path / "a.sdl")
    [d] = result.diagnostics
    assert d.code == "E206"
    assert "UTF-8" in " ".join(d.hints)


def test_check_is_pure_and_does_not_mutate() -> None:
    module = parse(_SAMPLE, "orders.sdl")
    before = dataclasses.replace(module)
    first = check(module, {"hooks.py": _HOOKS})
    second = check(module, {"hooks.py": _HOOKS})
    assert first == second
    assert module == before


def test_where_text_keeps_its_parentheses() -> None:
    program = check_text(
        "record R { a: int? }\ntopic t: R\n"
        "agent x = from t | where not (a == null) and (a != 3)\n"
    )
    where = program.agents[0].ops[0]
    assert isinstance(where, ir.Where)
    assert where.text == "not (a == null) and (a != 3)"
    assert program.agents[0].text == "from t | where not (a == null) and (a != 3)"


def test_each_broken_declaration_gets_its_syntax_error() -> None:
    text = (
        "record R {\n  a int\n}\n"
        "topic t: R key str\n"
        "agent x = from t | grop_by a\n"
        "agent y = from t | take 3\n"
        "agent z = from t | take 3 within\n"
    )
    diagnostics = diagnostics_of(text)
    assert [(d.code, d.line) for d in diagnostics] == [
        ("E103", 2),
        ("E106", 5),
        ("E104", 7),
    ]


def test_syntax_errors_are_capped() -> None:
    text = "".join(f"topic t{i} key\n" for i in range(50))
    assert len(diagnostics_of(text)) == 10


def test_optional_parameter_accepts_plain_values() -> None:
    program = check_text(
        'record R { a: str }\ntopic t: R key str\nhooks "hooks.py" { f(R?)  g(list[any]) }\n'
        "agent x = from t | sink f\nagent y = from t | take 2 | sink g\n",
        "def f(r): pass\ndef g(rs): pass\n",
    )
    assert [a.name for a in program.agents] == ["x", "y"]
    assert (
        diagnostics_of(
            'record R { a: str? }\ntopic t: R? key str\nhooks "hooks.py" { f(R) }\n'
            "agent x = from t | sink f\n",
            "def f(r): pass\n",
        )[0].code
        == "E307"
    )


def test_null_checks_narrow_the_rest_of_the_condition() -> None:
    program = check_text(
        "record C { country: str? }\nrecord R { a: int?  c: C? }\ntopic t: R\n"
        "agent x = from t | where a != null and a > 1\n"
        "agent y = from t | where a == null or a * 2 < 10\n"
        "agent z = from t | where not (a == null) and a < 3\n"
    )
    x = program.agents[0].ops[0]
    assert isinstance(x, ir.Where) and isinstance(x.expr, ir.Binary)
    assert x.expr.right == ir.Binary(
        ">", ir.FieldRef(("a",), ir.INT), ir.Const(1, ir.INT), ir.BOOL
    )
    codes = [
        d.code
        for d in diagnostics_of(
            "record R { a: int? }\ntopic t: R\n"
            "agent x = from t | where a != null or a > 1\n"
            "agent y = from t | where a > 1 and a != null\n"
            "record C { n: int? }\nrecord S { c: C? }\ntopic s: S\n"
            "agent z = from s | where c.n != null and c.n > 1\n"
        )
    ]
    assert codes == ["E310", "E310", "E310"]


_SHAPES = """\
import functools

def retry(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)
    return wrapper

async def plain_async(x): pass
def plain_none(x):
    if x:
        return
    return None
def plain_nested(x):
    def inner():
        return 1
    print(inner)
def returns_value(x): return other(x)
def generator(x): yield x
@retry
async def decorated_async(x): pass
async def rebound(x): pass
rebound = retry(rebound)
def other(x): pass
"""


def test_the_call_shape_of_a_hook_is_proven_only_from_undecorated_unbound_defs() -> None:
    names = [
        "plain_async", "plain_none", "plain_nested", "returns_value", "generator",
        "decorated_async", "rebound",
    ]  # fmt: skip
    hooks = "\n".join(f"    {n}(Order)" for n in names)
    agents = "\n".join(f"agent a_{n} = from orders | sink {n}" for n in names)
    program = check_text(
        "record Order { id: str }\ntopic orders: Order\n"
        f'hooks "hooks.py" {{\n{hooks}\n}}\n{agents}\n',
        _SHAPES,
    )
    proven = {n: program.hook(n).call_proven for n in names}
    assert proven == {
        "plain_async": True,
        "plain_none": True,
        "plain_nested": True,  # a nested function's return is not the hook's
        "returns_value": False,  # may return a coroutine
        "generator": False,
        "decorated_async": False,
        "rebound": False,
    }
