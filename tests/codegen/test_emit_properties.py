"""Property: any program the checker accepts compiles to Python that parses, whatever names
and strings it uses, and every string literal reaches the generated code unchanged.

Programs are drawn from names that are Python keywords, soft keywords, builtins and the
generated modules' own names (backquoted, so they are legal .sdl names too), and from
arbitrary text for string literals.
"""

from __future__ import annotations

import ast as pyast

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from streamc.checker import check
from streamc.diagnostics import DiagnosticError
from streamc.emit import emit
from streamc.parser import parse

TRICKY = [
    "class", "def", "list", "str", "int", "id", "type", "match", "case", "_", "self", "None",
    "True", "app", "topics", "records", "hooks", "agents", "Stream", "Event", "msgspec",
    "Record", "print", "lambda", "async", "await", "from", "key", "name", "to", "where",
    "value", "batch", "stream", "annotations", "Any", "main", "order", "i", "__init__",
]  # fmt: skip

names = st.sampled_from(TRICKY)
texts = st.text(max_size=12)


def sdl_string(text: str) -> str:
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    return '"' + "".join(escapes.get(c, c) for c in text) + '"'


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, list[str]]:
    strings: list[str] = []
    record = draw(names)
    fields = draw(st.lists(names, min_size=2, max_size=5, unique=True))
    lines = ["app `" + draw(names) + "`", f"record `{record}` {{"]
    default = draw(texts)
    strings.append(default)
    lines.append(f"    `{fields[0]}`: str = {sdl_string(default)}")
    lines.append(f"    `{fields[1]}`: int")
    lines += [f"    `{f}`: list[str] = []" for f in fields[2:]]
    lines.append("}")
    topics = draw(st.lists(names, min_size=2, max_size=3, unique=True))
    for topic in topics:
        kafka = draw(st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True))
        lines.append(f'topic `{topic}`: `{record}` key str partitions 2 name "{kafka}.{topic}"')
    agents = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    for agent in agents:
        literal = draw(texts)
        ops = [
            f"where `{fields[0]}` != {sdl_string(literal)} or `{fields[1]}` % 2 == 0",
            f"group_by `{fields[0]}`",
            f"echo `{topics[1]}`",
        ]
        chosen = draw(st.lists(st.sampled_from(ops), max_size=3))
        if ops[0] in chosen:
            strings.append(literal)
        tail = draw(st.sampled_from(["", f" | to `{topics[-1]}`", " | take 5 within 1s"]))
        lines.append(
            f"agent `{agent}` = from `{topics[0]}`" + "".join(f" | {o}" for o in chosen) + tail
        )
    return "\n".join(lines) + "\n", strings


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_accepted_programs_emit_parseable_python(case: tuple[str, list[str]]) -> None:
    source, strings = case
    try:
        module = parse(source, "p.sdl")
    except DiagnosticError:
        assume(False)
        return
    program = check(module, {}).program
    assume(program is not None)
    assert program is not None
    constants: set[object] = set()
    for path, text in emit(program).items():
        if path.suffix == ".py":
            tree = pyast.parse(text, filename=str(path))  # raises on unsafe output
            constants |= {n.value for n in pyast.walk(tree) if isinstance(n, pyast.Constant)}
    for string in strings:
        assert string in constants
