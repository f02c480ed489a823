"""A hook's Python annotations against its declaration in the .sdl, read without importing.

The declaration is what the checker trusts; annotations are the hook author's own account of
the same function, and a disagreement (`def f(x: int) -> str` for `f(Order) -> bool`) is a bug
the worker would otherwise only meet at run time. Annotations are resolved syntactically, with
the module's own imports and definitions as the only context: builtins, the .sdl's record names,
`list[...]`, `tuple[...]`, `X | None`, `Optional`/`Union`, `typing.` prefixes, string
annotations and `Awaitable`/`Coroutine` results. Anything else (`Any`, Protocols, TypeVars,
aliases, classes imported from elsewhere) is unknown, and unknown is always accepted: this
check must never reject a hook that is right.

`rebound_defs` and `call_proven` read the same source for the checker's other questions about a
hook: whether its module binds its name again, and whether calling it is known to give a
coroutine or None.
"""

from __future__ import annotations

import ast as pyast
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from . import ir
from .diagnostics import Span

_TYPING = {"typing", "typing_extensions", "collections.abc"}
_PRIMITIVES = {"str", "int", "float", "bool", "bytes"}
# The generics this check understands, by their typing names and the builtins spelling.
_GENERICS = {
    "list": "list", "List": "list", "tuple": "tuple", "Tuple": "tuple",
    "Optional": "Optional", "Union": "Union", "Awaitable": "Awaitable",
    "Coroutine": "Coroutine",
}  # fmt: skip
_LOCAL = ("local",)


@dataclass(frozen=True)
class _T:
    """A resolved annotation. kind: unknown, any, none, prim, record, list, tuple, union,
    awaitable, or generic (a bare `list`, `Optional`, ... waiting for its arguments)."""

    kind: str
    name: str = ""
    args: tuple[_T, ...] = ()


_UNKNOWN = _T("unknown")
_NONE = _T("none")


@dataclass(frozen=True)
class Mismatch:
    span: Span
    message: str
    hints: tuple[str, ...] = ()


@dataclass
class Scope:
    """What each top-level name of a hooks module is bound to, and the .sdl's record names."""

    bindings: dict[str, tuple[str, ...]]
    records: Collection[str]

    @classmethod
    def of(cls, tree: pyast.Module, records: Collection[str]) -> Scope:
        bindings: dict[str, tuple[str, ...]] = {}

        def bind(name: str, what: tuple[str, ...]) -> None:
            # A name bound two different ways cannot be resolved without running the module.
            bindings[name] = what if bindings.get(name, what) == what else _LOCAL

        for stmt in _top_level(tree.body):
            if isinstance(stmt, pyast.Import):
                for a in stmt.names:
                    if a.asname:
                        bind(a.asname, ("module", a.name))
                    else:
                        first = a.name.split(".")[0]
                        bind(first, ("module", first))
            elif isinstance(stmt, pyast.ImportFrom):
                source = "." * stmt.level + (stmt.module or "")
                for a in stmt.names:
                    bind(a.asname or a.name, ("import", source, a.name))
            elif isinstance(stmt, pyast.FunctionDef | pyast.AsyncFunctionDef | pyast.ClassDef):
                bind(stmt.name, _LOCAL)
            else:
                # Assignments, `type X = ...` aliases, loop and `with` targets.
                for node in pyast.walk(stmt):
                    if isinstance(node, pyast.Name) and isinstance(node.ctx, pyast.Store):
                        bind(node.id, _LOCAL)
        return cls(bindings, records)

    def name(self, name: str) -> _T:
        binding = self.bindings.get(name)
        if binding is None:  # a builtin, or a name only an annotation mentions
            if name in _PRIMITIVES:
                return _T("prim", name)
            if name in ("list", "tuple"):
                return _T("generic", name)
            return _T("record", name) if name in self.records else _UNKNOWN
        if binding[0] == "import":
            return self.qualified(binding[1], binding[2])
        if binding[0] == "module":
            return _T("module", binding[1])
        return _UNKNOWN

    def qualified(self, module: str, name: str) -> _T:
        if module in _TYPING and name in _GENERICS and name[0].isupper():
            return _T("generic", _GENERICS[name])
        if module == "builtins":
            if name in _PRIMITIVES:
                return _T("prim", name)
            return _T("generic", name) if name in ("list", "tuple") else _UNKNOWN
        # The generated package's records module, imported as `..records` or `pkg.records`.
        if module.rsplit(".", 1)[-1] == "records" and name in self.records:
            return _T("record", name)
        return _UNKNOWN

    def resolve(self, node: pyast.expr, depth: int = 0) -> _T:
        t = self._resolve(node, depth)
        if t.kind == "generic":  # used without arguments
            return _T("list", args=(_UNKNOWN,)) if t.name == "list" else _UNKNOWN
        return _UNKNOWN if t.kind == "module" else t

    def _resolve(self, node: pyast.expr, depth: int) -> _T:
        if depth > 20:
            return _UNKNOWN
        if isinstance(node, pyast.Constant):
            if node.value is None:
                return _NONE
            if isinstance(node.value, str) and depth < 3:
                try:
                    inner = pyast.parse(node.value.strip(), mode="eval").body
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    return _UNKNOWN
                return self.resolve(inner, depth + 1)
            return _UNKNOWN
        if isinstance(node, pyast.Name):
            return self.name(node.id)
        if isinstance(node, pyast.Attribute):
            base = self._resolve(node.value, depth + 1)
            if base.kind == "module":
                return (
                    self.qualified(base.name, node.attr)
                    if base.name in _TYPING | {"builtins"}
                    else _T("module", f"{base.name}.{node.attr}")
                )
            return _UNKNOWN
        if isinstance(node, pyast.BinOp) and isinstance(node.op, pyast.BitOr):
            return _union(self.resolve(node.left, depth + 1), self.resolve(node.right, depth + 1))
        if isinstance(node, pyast.Subscript):
            head = self._resolve(node.value, depth + 1)
            if head.kind != "generic":
                return _UNKNOWN
            items = node.slice.elts if isinstance(node.slice, pyast.Tuple) else [node.slice]
            if head.name == "tuple":
                if any(isinstance(i, pyast.Constant) and i.value is Ellipsis for i in items):
                    return _UNKNOWN  # tuple[X, ...]: any length
                return _T("tuple", args=tuple(self.resolve(i, depth + 1) for i in items))
            args = [self.resolve(i, depth + 1) for i in items]
            if head.name == "list" and len(args) == 1:
                return _T("list", args=(args[0],))
            if head.name == "Optional" and len(args) == 1:
                return _union(args[0], _NONE)
            if head.name == "Union" and args:
                return _union(*args)
            if head.name == "Awaitable" and len(args) == 1:
                return _T("awaitable", args=(args[0],))
            if head.name == "Coroutine" and len(args) == 3:
                return _T("awaitable", args=(args[2],))
        return _UNKNOWN


def _top_level(body: Sequence[pyast.stmt]) -> Iterator[pyast.stmt]:
    """The module's statements, looking into `if`/`try`/`with` blocks (TYPE_CHECKING imports)."""
    for stmt in body:
        if isinstance(stmt, pyast.If | pyast.For | pyast.While):
            yield from _top_level([*stmt.body, *stmt.orelse])
        elif isinstance(stmt, pyast.With):
            yield from _top_level(stmt.body)
        elif isinstance(stmt, pyast.Try):
            blocks = [*stmt.body, *stmt.orelse, *stmt.finalbody]
            yield from _top_level([*blocks, *(s for h in stmt.handlers for s in h.body)])
        else:
            yield stmt


def _union(*members: _T) -> _T:
    flat: list[_T] = []
    for m in members:
        for x in m.args if m.kind == "union" else (m,):
            if x not in flat:
                flat.append(x)
    return flat[0] if len(flat) == 1 else _T("union", args=tuple(flat))


def _from_ir(t: ir.Type) -> _T:
    if isinstance(t, ir.PrimType):
        return _T("prim", t.name)
    if isinstance(t, ir.RecordType):
        return _T("record", t.name)
    if isinstance(t, ir.ListType):
        return _T("list", args=(_from_ir(t.item),))
    if isinstance(t, ir.OptionalType):
        return _union(_from_ir(t.inner), _NONE)
    if isinstance(t, ir.TupleType):
        return _T("tuple", args=tuple(_from_ir(i) for i in t.items))
    if isinstance(t, ir.AnyType):
        return _T("any")
    return _UNKNOWN  # Event[K, V]: hooks annotate it with their own Protocol


_WIDER = {"float": {"int", "bool"}, "int": {"bool"}}  # PEP 484's numeric promotions


def accepts(target: _T, value: _T) -> bool:
    """Whether a value of type `value` may go where `target` is expected (unknown: yes)."""
    if target.kind == "unknown" or value.kind == "unknown":
        return True
    if value.kind == "union":
        return all(accepts(target, v) for v in value.args)
    if target.kind == "union":
        return any(accepts(t, value) for t in target.args)
    if target.kind != value.kind:
        return False
    if target.kind == "prim":
        return target.name == value.name or value.name in _WIDER.get(target.name, ())
    if target.kind == "record":
        return target.name == value.name
    if target.kind in ("list", "awaitable"):
        return accepts(target.args[0], value.args[0])
    if target.kind == "tuple":
        return len(target.args) == len(value.args) and all(
            accepts(t, v) for t, v in zip(target.args, value.args, strict=True)
        )
    return True  # none, any


def _span(node: pyast.AST, lines: Sequence[str]) -> Span:
    # `ast` columns count UTF-8 bytes; diagnostics count characters.
    line, end_line = getattr(node, "lineno", 1), getattr(node, "end_lineno", None) or 0
    text = lines[line - 1] if 0 < line <= len(lines) else ""

    def chars(text: str, offset: int) -> int:
        return len(text.encode("utf-8")[:offset].decode("utf-8", errors="replace")) + 1

    col = chars(text, getattr(node, "col_offset", 0))
    end_col = chars(text, getattr(node, "end_col_offset", 0)) if end_line == line else col + 1
    return Span(line, col, line, max(end_col, col + 1), 0, 0)


def annotation_mismatches(
    fn: pyast.FunctionDef | pyast.AsyncFunctionDef,
    params: Sequence[ir.Type | None],
    returns: ir.Type | None,
    has_return: bool,
    scope: Scope,
    lines: Sequence[str],
) -> list[Mismatch]:
    """Where `fn`'s annotations contradict the declared parameter and return types.

    The caller has already checked that `fn` takes `len(params)` positional arguments.
    """
    found: list[Mismatch] = []
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    for i, declared in enumerate(params):
        arg = positional[i] if i < len(positional) else args.vararg
        if declared is None or arg is None or arg.annotation is None:
            continue
        annotated = scope.resolve(arg.annotation)
        if not accepts(annotated, _from_ir(declared)):
            found.append(Mismatch(
                _span(arg.annotation, lines),
                f"parameter '{arg.arg}' is annotated {pyast.unparse(arg.annotation)}, but the "
                f"hook is declared to take {declared} there",
            ))  # fmt: skip
    if fn.returns is None:
        return found
    result = scope.resolve(fn.returns)
    shown = pyast.unparse(fn.returns)
    if result.kind == "awaitable" and isinstance(fn, pyast.FunctionDef):
        result = result.args[0]  # the runtime awaits what a plain def returns, sinks too
    if not has_return:
        if not accepts(_NONE, result):
            found.append(Mismatch(
                _span(fn.returns, lines),
                f"the function is annotated to return {shown}, but the hook is declared to "
                "return nothing",
                ("declare the return type, or annotate the function `-> None`",),
            ))  # fmt: skip
    elif returns is not None and not accepts(_from_ir(returns), result):
        found.append(Mismatch(
            _span(fn.returns, lines),
            f"the function is annotated to return {shown}, but the hook is declared to "
            f"return {returns}",
        ))  # fmt: skip
    return found


def rebound_defs(
    tree: pyast.Module, functions: Mapping[str, pyast.FunctionDef | pyast.AsyncFunctionDef]
) -> set[pyast.AST]:
    """The functions whose name a top-level statement after their `def` binds again."""
    rebound: set[pyast.AST] = set()
    for name, fn in functions.items():
        after = tree.body[tree.body.index(fn) + 1 :]
        if any(
            isinstance(node, pyast.Name) and node.id == name and isinstance(node.ctx, pyast.Store)
            for statement in after
            for node in pyast.walk(statement)
        ):
            rebound.add(fn)
    return rebound


def call_proven(fn: pyast.FunctionDef | pyast.AsyncFunctionDef) -> bool:
    """Whether the source alone tells what calling `fn` gives back, so generated code may call
    it directly: an undecorated `async def` gives a coroutine to await; an undecorated `def`
    that is not a generator and returns no value gives None. Anything else (a decorator, a
    `def` returning another call's result) may give an awaitable: the runtime decides."""
    if fn.decorator_list:
        return False
    if isinstance(fn, pyast.AsyncFunctionDef):
        return True
    own: list[pyast.AST] = list(fn.body)
    while own:
        node = own.pop()
        if isinstance(node, pyast.Yield | pyast.YieldFrom):
            return False
        if isinstance(node, pyast.Return) and not (
            node.value is None
            or (isinstance(node.value, pyast.Constant) and node.value.value is None)
        ):
            return False
        if not isinstance(node, pyast.FunctionDef | pyast.AsyncFunctionDef | pyast.ClassDef
                          | pyast.Lambda):  # fmt: skip
            own.extend(pyast.iter_child_nodes(node))
    return True
