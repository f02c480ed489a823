"""The fused end of an agent's pipeline: its stateless operations as one plain loop over each
run of elements (`Stream.runs()`), hooks called directly and their results checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ir
from .emit_layout import _named_after, _strip, loop_targets
from .naming import Namer, py_literal

if TYPE_CHECKING:
    from .emit_shape import _Shaper


# The operations a generated agent handles in one plain loop over each run of elements.
_FUSED = (ir.Process, ir.Filter, ir.Where, ir.Select, ir.Enumerate, ir.Echo, ir.To, ir.Sink)
# Operations after which an element's value is no longer its message's decoded value.
_CHANGES = (ir.Process, ir.Select, ir.Aggregate, ir.Join, ir.Take, ir.Enumerate, ir.Items,
            ir.Events)  # fmt: skip


class _Fused:
    """The loop a fused pipeline end becomes: `for order in run:`, then each operation in
    pipeline order as plain statements. Sync hooks are called directly; what a hook that is not
    proven sync returns is awaited only when it is awaitable; a hook's result is checked
    against its declared type by a check built once, at module level."""

    def __init__(self, shaper: _Shaper, agent: ir.Agent, cut: int, elements: list[ir.Type],
                 made_fn: dict[int, str], local: Namer) -> None:  # fmt: skip
        self.shaper = shaper
        self.agent = agent
        self.cut = cut
        self.elements = elements
        self.made_fn = made_fn
        self.local = local  # the module's names: checks are claimed there
        self.scope = Namer(set(local.taken) | {"stream", "topics", "app"})
        self.run = self.scope.claim("run")
        self.checks: list[str] = []  # module-level lines
        self.check_names: dict[str, str] = {}
        self.imports: list[str] = []
        self.counters: list[int] = []
        self.var_of: dict[str, str] = {}  # annotation -> the loop's variable of that type

    def _import(self, name: str) -> None:
        if name not in self.imports:
            self.imports.append(name)

    def _var(self, t: ir.Type) -> str:
        annotation = self.shaper.annotation(t)
        name = self.var_of.get(annotation)
        if name is None:
            base = _strip(t)
            if isinstance(base, ir.RecordType):
                name = _named_after(base.name, self.scope)
            elif isinstance(base, ir.ListType):
                name = self.scope.claim("batch")
            elif isinstance(base, ir.EventType):
                name = self.scope.claim("event")
            else:
                name = self.scope.claim("value")
            self.var_of[annotation] = name
        return name

    def _check(self, hook: str) -> str:
        name = self.check_names.get(hook)
        if name is None:
            declared = self.shaper.program.hook(hook).returns
            assert declared is not None
            name = self.check_names[hook] = self.local.claim(f"check_{hook}")
            self.scope.reserve(name)
            self.checks.append(f"{name} = result_check({self.shaper.annotation(declared)}, "
                               f"{py_literal(hook)})")  # fmt: skip
            self._import("result_check")
        return name

    def _call(self, hook: str, arg: str, result: str) -> list[str]:
        """`result = hook(arg)`, awaited if it must be, then checked."""
        called = self.shaper.program.hook(hook)
        fn = self.shaper.hook_names[hook]
        check = self._check(hook)
        if called.is_async and called.call_proven:
            return [*self._flush(), f"{result} = {check}(await {fn}({arg}))"]
        self._import("awaitable")
        return [f"{result} = {fn}({arg})", f"if awaitable({result}):",
                *(f"    {line}" for line in self._flush()), f"    {result} = await {result}",
                f"{result} = {check}({result})"]  # fmt: skip

    def _flush(self) -> list[str]:
        """Before the loop waits on a hook: what the run has done so far is sent and acked
        first, so a slow hook cannot hold back output or commits that are done."""
        return [f"await {self.run}.flush()"]

    def lines(self) -> tuple[str, ...]:
        agent, cut, run = self.agent, self.cut, self.run
        first = self.elements[cut]
        producer = agent.ops[cut - 1] if cut > 0 else None
        if isinstance(first, ir.TupleType) and isinstance(producer, ir.Items):
            current = loop_targets(first, producer, self.scope)
            self.scope.reserve(*current)
        elif isinstance(first, ir.TupleType):  # a join's pair: whole, as its functions take it
            current = [self.scope.claim("pair")]
        else:
            current = [self._var(first)]
        head = f"for {', '.join(current)} in {run}:"
        changed = False
        for op in reversed(agent.ops[:cut]):
            if isinstance(op, ir.GroupBy | ir.Through):
                break  # what comes back from the topic is its messages' decoded values
            changed = changed or isinstance(op, _CHANGES)
        body: list[str] = []
        keep: str | None = None

        def whole() -> str:
            return current[0] if len(current) == 1 else f"({', '.join(current)})"

        for index in range(cut, len(agent.ops)):
            op = agent.ops[index]
            match op:
                case ir.Process(hooks=hooks):
                    for hook in hooks:
                        declared = self.shaper.program.hook(hook).returns
                        assert declared is not None
                        result = self._var(declared)
                        body += self._call(hook, whole(), result)
                        current = [result]
                    changed = True
                case ir.Select(out=out):
                    result = self._var(out)
                    body.append(f"{result} = {self.made_fn[index]}({whole()})")
                    current = [result]
                    changed = True
                case ir.Where():
                    body += [f"if not {self.made_fn[index]}({whole()}):", "    continue"]
                case ir.Filter(hook=hook):
                    if keep is None:
                        keep = self.scope.claim("keep")
                    body += self._call(hook, whole(), keep)
                    body += [f"if not {keep}:", "    continue"]
                case ir.Enumerate(start=start):
                    number = self.scope.claim("i")
                    body.append(f"{number} = {run}.count({len(self.counters)})")
                    self.counters.append(start)
                    current = [number, whole()]
                    changed = True
                case ir.Echo() | ir.To() as sending:
                    targets = sending.topics if isinstance(sending, ir.Echo) else (sending.topic,)
                    raw = "" if changed else ", as_received=True"
                    # A send the element has steps with effects after (a hook, a number, a
                    # send, a sink) has its record's size checked at once: a record too large
                    # stops the element there. The last one's refusal can wait for the run.
                    later = any(not isinstance(after, ir.Where | ir.Select)
                                for after in agent.ops[index + 1 :])  # fmt: skip
                    for n, t in enumerate(targets):
                        more = ", more_steps=True" if later or n < len(targets) - 1 else ""
                        body.append(f"{run}.send(topics.{self.shaper.topic_attrs[t]}, "
                                    f"{whole()}{raw}{more})")  # fmt: skip
                case ir.Sink(hook=hook, unpack=unpack):
                    args = ", ".join(current) if unpack and len(current) > 1 else whole()
                    if unpack and len(current) == 1 and isinstance(self.elements[index],
                                                                   ir.TupleType):  # fmt: skip
                        args = f"*{current[0]}"  # a join's pair to a sink of two parameters
                    called = self.shaper.program.hook(hook)
                    fn = self.shaper.hook_names[hook]
                    if not called.call_proven:
                        self._import("sink")
                        body += [*self._flush(), f"await sink({fn}, {args})"]
                    elif called.is_async:
                        body += [*self._flush(), f"await {fn}({args})"]
                    else:
                        body.append(f"{fn}({args})")
        if not body:
            body = ["pass"]
        return (head, *(f"    {line}" for line in body))
