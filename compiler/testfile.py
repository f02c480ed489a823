"""Test files (`<program>.test.yaml`): read and checked against the program like a program.

A test file is data: named cases, each with the inputs it produces (and clock steps between
them), and what it expects the program to write. `check_test_file` is a pure function of the
file's text and the checked program: it returns the cases and every diagnostic (E4xx), with
`file:line:col` spans taken from the YAML nodes, and never raises on a user error. The format
is documented in docs/testing.md; `compiler/testing.py` runs the cases, and
`compiler/testfile_update.py` rewrites their expectations for `streamc test --update`.

YAML is read with PyYAML's composer rather than its loader so every value keeps its position;
values are then built from the nodes by PyYAML's safe constructor (YAML 1.1: `no` is a bool,
so a country code `NO` must be quoted; a checked value that should be a string says so).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import yaml

from . import ir
from .diagnostics import Diagnostic, Span, did_you_mean
from .testfile_yaml import (
    _NOT_SCALAR,
    _describe,
    _fits,
    _is_int,
    _is_time,
    _mark_span,
    _scalar,
    _show,
    _yaml_kind,
    epoch_ms,
    flow,
    node_span,
    plain,
)

SUFFIX = ".test.yaml"

# Case keys, input keys and expectation keys: the vocabulary E402 checks against.
_FILE_KEYS = ("cases",)
_CASE_KEYS = ("name", "agents", "inputs", "expect", "dead_letters", "tables")
_INPUT_KEYS = ("topic", "key", "value", "raw", "raw_base64", "headers", "partition", "timestamp")
_RECORD_KEYS = ("key", "value", "raw", "raw_base64", "headers", "partition", "timestamp")
_ORDERED_KEYS = ("order", "records")
_DEAD_KEYS = ("topic", "agent", "type", "error", "key", "raw", "raw_base64", "partition")
_ROW_KEYS = ("key", "value", "window")
ORDERS = ("partition", "set")


@dataclass(frozen=True)
class Input:
    """One record a case produces: the fields of a `streamc run` JSONL input line."""

    topic: str  # the Kafka name
    fields: dict[str, Any]  # "value"/"raw"/"raw_base64", "key", "headers", ...
    span: Span


@dataclass(frozen=True)
class Advance:
    """Move the virtual clock forward, firing every timer that falls due on the way."""

    seconds: float
    span: Span


Step = Input | Advance


@dataclass(frozen=True)
class ExpectedRecord:
    """A record a topic must hold. Keys absent from `fields` are not compared, except `key`
    and the value (absent: no key; a tombstone only when `value: null` is written)."""

    fields: dict[str, Any]
    span: Span


@dataclass(frozen=True)
class TopicExpectation:
    name: str  # as written in the test file
    topic: str  # the Kafka name
    order: str  # "partition": in order per partition; "set": any order
    records: tuple[ExpectedRecord, ...]
    span: Span


@dataclass(frozen=True)
class ExpectedDeadLetter:
    fields: dict[str, Any]  # topic (Kafka name), agent, type, error (a substring), key, ...
    span: Span


@dataclass(frozen=True)
class ExpectedRow:
    """A row a table must hold at the end of a case: `key`, and `value` when written (the
    row's whole record); `window` (start, end) in epoch ms for a windowed table."""

    fields: dict[str, Any]
    span: Span


@dataclass(frozen=True)
class TableExpectation:
    name: str
    rows: tuple[ExpectedRow, ...]
    span: Span


@dataclass(frozen=True)
class Case:
    name: str
    agents: tuple[str, ...] | None  # None: every agent
    steps: tuple[Step, ...]
    expect: tuple[TopicExpectation, ...]
    dead_letters: tuple[ExpectedDeadLetter, ...] | None  # None: not checked
    span: Span  # the case's mapping, for `--update`
    name_span: Span
    tables: tuple[TableExpectation, ...] = ()  # only the tables listed are compared


@dataclass(frozen=True)
class TestFile:
    path: str
    cases: tuple[Case, ...]


def program_path_for(test_path: str) -> str:
    """`samples/orders.test.yaml` -> `samples/orders.sdl`: a test file sits beside its program."""
    assert test_path.endswith(SUFFIX)
    return test_path[: -len(SUFFIX)] + ".sdl"


def test_path_for(program_path: str) -> str:
    stem = program_path[:-4] if program_path.endswith(".sdl") else program_path
    return stem + SUFFIX


def parse_duration(text: str) -> float | None:
    """`10s`, `500ms`, `5m`, `1h` (also `1.5s`) in seconds; None if it is not a duration."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if match is None:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return float(match.group(1)) * scale


def topic_names(program: ir.Program) -> dict[str, ir.Topic]:
    """Every name a test file may use for a topic: its `.sdl` name and its Kafka name."""
    names: dict[str, ir.Topic] = {}
    for topic in program.topics:
        names.setdefault(topic.name, topic)
        names.setdefault(topic.kafka_name, topic)
    return names


def check_test_file(
    text: str, path: str, program: ir.Program
) -> tuple[TestFile | None, list[Diagnostic]]:
    """The cases of a test file and its diagnostics; the file is None if any is an error."""
    checker = _Checker(path, program)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        span = _mark_span(mark) if mark is not None else None
        problem = error.problem or error.context or "invalid YAML"
        hints: tuple[str, ...] = ()
        if error.context and error.context_mark is not None and mark is not error.context_mark:
            where = error.context_mark
            hints = (f"{error.context} that starts at line {where.line + 1}, column "
                     f"{where.column + 1}",)  # fmt: skip
        checker.error(span, "E401", f"not valid YAML: {problem}", hints)
        return None, checker.diagnostics
    except yaml.YAMLError as error:  # a reader error: a control character, say
        checker.error(None, "E401", f"not valid YAML: {error}")
        return None, checker.diagnostics
    try:
        if root is not None:
            plain(root)  # tags the safe loader does not know (`!!python/...`) are refused here
        cases = checker.file(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        span = _mark_span(mark) if mark is not None else None
        checker.error(span, "E401", f"not valid YAML: {problem}")
        cases = []
    except RecursionError:  # an alias inside itself (`&a [*a]`), or absurd nesting
        checker.error(None, "E401", "not valid YAML here: nested too deeply or recursive")
        cases = []
    diagnostics = sorted(checker.diagnostics, key=Diagnostic.sort_key)
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    return TestFile(path, tuple(cases)), diagnostics


_TIME_HINT = (
    "a time is RFC 3339 text with an offset, such as 2026-03-01T12:00:00Z, or epoch milliseconds"
)


class _Checker:
    def __init__(self, path: str, program: ir.Program) -> None:
        self.path = path
        self.program = program
        self.topics = topic_names(program)
        self.records = {r.name: r for r in program.records}
        self.diagnostics: list[Diagnostic] = []

    def error(
        self, span: Span | None, code: str, message: str, hints: tuple[str, ...] = ()
    ) -> None:
        self.diagnostics.append(Diagnostic.error(self.path, span, code, message, hints))

    # -- shapes -------------------------------------------------------------------------------
    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """The entries of a mapping node by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node_span(node), "E402", f"{what} must be a mapping")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, str):
                self.error(node_span(key_node), "E402", f"{what}: keys must be names")
                continue
            if key not in allowed:
                hints = did_you_mean(key, allowed) or (f"expected one of: {', '.join(allowed)}",)
                self.error(node_span(key_node), "E402", f"{what} has no field '{key}'", hints)
                continue
            if key in out:
                self.error(node_span(key_node), "E402", f"{what}: '{key}' is given twice")
                continue
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and plain(node) is None:
            return []  # `inputs:` with nothing after it
        if not isinstance(node, yaml.SequenceNode):
            self.error(node_span(node), "E402", f"{what} must be a list")
            return []
        return list(node.value)

    # -- the file -----------------------------------------------------------------------------
    def file(self, root: yaml.Node | None) -> list[Case]:
        if root is None:
            self.error(None, "E402", "the test file is empty; it needs `cases:`")
            return []
        entries = self.mapping(root, "a test file", _FILE_KEYS)
        if entries is None:
            return []
        if "cases" not in entries:
            self.error(node_span(root), "E402", "a test file needs `cases:`, a list of cases")
            return []
        cases: list[Case] = []
        seen: dict[str, Span] = {}
        for node in self.sequence(entries["cases"][1], "`cases`"):
            case = self.case(node)
            if case is None:
                continue
            if case.name in seen:
                first = seen[case.name]
                self.error(
                    case.name_span,
                    "E407",
                    f"a case named '{case.name}' is already defined (line {first.line})",
                )
                continue
            seen[case.name] = case.span
            cases.append(case)
        return cases

    def case(self, node: yaml.Node) -> Case | None:
        entries = self.mapping(node, "a case", _CASE_KEYS)
        if entries is None:
            return None
        name_entry = entries.get("name")
        name = _scalar(name_entry[1]) if name_entry else None
        if not isinstance(name, str) or not name.strip():
            at = name_entry[1] if name_entry else node
            self.error(node_span(at), "E407", "a case needs a `name:`, a non-empty string")
            name = None
        agents: tuple[str, ...] | None = None
        if "agents" in entries:
            agents = self.agents(entries["agents"][1])
        steps: list[Step] = []
        if "inputs" in entries:
            for item in self.sequence(entries["inputs"][1], "`inputs`"):
                step = self.step(item)
                if step is not None:
                    steps.append(step)
        expect: list[TopicExpectation] = []
        if "expect" in entries:
            expect = self.expectations(entries["expect"][1])
        dead: tuple[ExpectedDeadLetter, ...] | None = None
        if "dead_letters" in entries:
            dead = tuple(
                d
                for d in (
                    self.dead_letter(item)
                    for item in self.sequence(entries["dead_letters"][1], "`dead_letters`")
                )
                if d is not None
            )
        tables: list[TableExpectation] = []
        if "tables" in entries:
            tables = self.tables(entries["tables"][1])
        if name is None:
            return None
        name_span = node_span(name_entry[1]) if name_entry else node_span(node)
        return Case(
            name,
            agents,
            tuple(steps),
            tuple(expect),
            dead,
            node_span(node),
            name_span,
            tuple(tables),
        )

    def agents(self, node: yaml.Node) -> tuple[str, ...]:
        known = [a.name for a in self.program.agents]
        out: list[str] = []
        for item in self.sequence(node, "`agents`"):
            name = _scalar(item)
            if not isinstance(name, str):
                self.error(node_span(item), "E405", "`agents` lists agent names")
            elif name not in known:
                hints = did_you_mean(name, known) or (f"agents: {', '.join(known)}",)
                self.error(node_span(item), "E405", f"the program has no agent '{name}'", hints)
            else:
                out.append(name)
        return tuple(out)

    def tables(self, node: yaml.Node) -> list[TableExpectation]:
        if isinstance(node, yaml.ScalarNode) and plain(node) is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.error(node_span(node), "E402", "`tables` is a mapping of table names to rows")
            return []
        known = {t.name: t for t in self.program.tables}
        out: list[TableExpectation] = []
        for key_node, value_node in node.value:
            name = _scalar(key_node)
            table = known.get(name) if isinstance(name, str) else None
            if table is None:
                hints = did_you_mean(str(name), list(known)) or (
                    (f"tables: {', '.join(known)}",)
                    if known
                    else ("the program declares no tables",)
                )
                shown = f"'{name}'" if isinstance(name, str) else _show(name)
                self.error(node_span(key_node), "E406", f"the program has no table {shown}", hints)
                continue
            if any(e.name == table.name for e in out):
                self.error(node_span(key_node), "E402", f"table {table.name} is expected twice")
                continue
            rows: list[ExpectedRow] = []
            seen: dict[tuple[str, tuple[int, int] | None], int] = {}
            for item in self.sequence(value_node, f"the rows of table {table.name}"):
                row = self.row(item, table)
                if row is None:
                    continue
                identity = (flow(row.fields["key"]), row.fields.get("window"))
                if identity in seen:
                    self.error(
                        node_span(item),
                        "E407",
                        f"table {table.name} has one row per key"
                        f"{' and window' if table.window else ''}; this one is given twice "
                        f"(line {seen[identity]})",
                    )
                    continue
                seen[identity] = row.span.line
                rows.append(row)
            out.append(TableExpectation(table.name, tuple(rows), node_span(key_node)))
        return out

    def row(self, node: yaml.Node, table: ir.Table) -> ExpectedRow | None:
        """An expected row: its key and value checked against the table's types."""
        what = f"a row of table {table.name}"
        entries = self.mapping(node, what, _ROW_KEYS)
        if entries is None:
            return None
        ok = True
        fields: dict[str, Any] = {}
        if "key" not in entries:
            self.error(node_span(node), "E402", f"{what} needs `key:`")
            ok = False
        else:
            key_node = entries["key"][1]
            ok &= self.value(key_node, table.key_type, f"the key of table {table.name}", False)
            fields["key"] = plain(key_node)
        if "value" in entries:
            value_node = entries["value"][1]
            ok &= self.value(value_node, table.value_type, f"table {table.name}", False)
            fields["value"] = plain(value_node)
        if table.window is None:
            if "window" in entries:
                self.error(
                    node_span(entries["window"][0]),
                    "E402",
                    f"table {table.name} has no window: its rows have no `window`",
                )
                ok = False
        elif "window" not in entries:
            self.error(
                node_span(node),
                "E402",
                f"{what} needs `window: [START, END]`: the table holds a row per key and window",
            )
            ok = False
        else:
            window = self.window(entries["window"][1])
            ok &= window is not None
            fields["window"] = window
        return ExpectedRow(fields, node_span(node)) if ok else None

    def window(self, node: yaml.Node) -> tuple[int, int] | None:
        """`[START, END]`, each a time (RFC 3339 or epoch ms), as epoch milliseconds."""
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != 2:
            self.error(
                node_span(node),
                "E407",
                "`window` is [START, END], two times (RFC 3339 text or epoch milliseconds)",
            )
            return None
        bounds: list[int] = []
        for item in node.value:
            value = _scalar(item)
            if not _is_time(value):
                self.error(
                    node_span(item),
                    "E404",
                    f"window: expected time, got {_describe(item)}",
                    (_TIME_HINT,),
                )
                return None
            bounds.append(epoch_ms(value))
        start, end = bounds
        if start >= end:
            self.error(node_span(node), "E407", "`window` is [START, END] with START before END")
            return None
        return start, end

    def topic(self, node: yaml.Node) -> ir.Topic | None:
        name = _scalar(node)
        if not isinstance(name, str):
            self.error(node_span(node), "E403", "a topic is named by a string")
            return None
        topic = self.topics.get(name)
        if topic is None:
            names = [t.name for t in self.program.topics]
            hints = did_you_mean(name, list(self.topics)) or (f"topics: {', '.join(names)}",)
            if name == f"{self.program.app}-dlq":
                hints = ("dead letters are expected under `dead_letters:`",)
            self.error(node_span(node), "E403", f"the program has no topic '{name}'", hints)
        return topic

    # -- inputs -------------------------------------------------------------------------------
    def step(self, node: yaml.Node) -> Step | None:
        if isinstance(node, yaml.MappingNode) and any(
            _scalar(k) == "advance" for k, _ in node.value
        ):
            entries = self.mapping(node, "a clock step", ("advance",))
            if entries is None or "advance" not in entries:
                return None
            value_node = entries["advance"][1]
            text = _scalar(value_node)
            seconds = parse_duration(text) if isinstance(text, str) else None
            if seconds is None:
                self.error(
                    node_span(value_node),
                    "E407",
                    f"`advance` takes a duration such as 500ms, 10s or 5m, got {_show(text)}",
                )
                return None
            return Advance(seconds, node_span(node))
        entries = self.mapping(node, "an input", _INPUT_KEYS)
        if entries is None:
            return None
        if "topic" not in entries:
            self.error(
                node_span(node),
                "E402",
                "an input needs `topic:` (or is a clock step, `advance: 10s`)",
            )
            return None
        topic = self.topic(entries["topic"][1])
        if topic is None:
            return None
        fields = self.message(entries, topic, node, "an input", require_value=True)
        if fields is None:
            return None
        return Input(topic.kafka_name, fields, node_span(node))

    def message(
        self,
        entries: dict[str, tuple[yaml.Node, yaml.Node]],
        topic: ir.Topic,
        node: yaml.Node,
        what: str,
        *,
        require_value: bool,
    ) -> dict[str, Any] | None:
        """The key, value and metadata of an input or an expected record, checked."""
        ok = True
        fields: dict[str, Any] = {}
        forms = [f for f in ("value", "raw", "raw_base64") if f in entries]
        if len(forms) > 1:
            self.error(
                node_span(entries[forms[1]][0]),
                "E407",
                f"{what} has one of `value`, `raw` and `raw_base64`, not several",
            )
            ok = False
        elif not forms and require_value:
            self.error(node_span(node), "E407", f"{what} needs `value:` (or `raw:`, `raw_base64:`)")
            ok = False
        for form in forms[:1]:
            value_node = entries[form][1]
            if form == "value":
                ok &= self.value(value_node, topic.value_type, f"topic {topic.name}", True)
                fields["value"] = plain(value_node)
            elif form == "raw":
                raw = _scalar(value_node)
                if not isinstance(raw, str):
                    self.error(node_span(value_node), "E407", "`raw` is a string (its bytes)")
                    ok = False
                fields["raw"] = raw
            else:
                text = _scalar(value_node)
                try:
                    base64.b64decode(text if isinstance(text, str) else "!", validate=True)
                except binascii.Error:
                    self.error(node_span(value_node), "E407", "`raw_base64` is a base64 string")
                    ok = False
                fields["raw_base64"] = text
        if "key" in entries:
            key_node = entries["key"][1]
            key = plain(key_node)
            if key is not None:
                ok &= self.value(key_node, topic.key_type, f"the key of topic {topic.name}", False)
            fields["key"] = key
        if "headers" in entries:
            headers_node = entries["headers"][1]
            headers = plain(headers_node)
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                self.error(
                    node_span(headers_node),
                    "E407",
                    "`headers` is a mapping of names to strings",
                    ('quote values that YAML reads otherwise: "1", "true"',),
                )
                ok = False
            fields["headers"] = headers
        if "partition" in entries:
            p_node = entries["partition"][1]
            p = _scalar(p_node)
            if not _is_int(p) or not 0 <= p < topic.partitions:
                self.error(
                    node_span(p_node),
                    "E407",
                    f"topic {topic.name} has partitions 0..{topic.partitions - 1}, got {_show(p)}",
                )
                ok = False
            fields["partition"] = p
        if "timestamp" in entries:
            t_node = entries["timestamp"][1]
            t = _scalar(t_node)
            if not _is_int(t) or t < 0:
                self.error(
                    node_span(t_node),
                    "E407",
                    f"`timestamp` is milliseconds since the epoch, got {_show(t)}",
                )
                ok = False
            fields["timestamp"] = t
        return fields if ok else None

    # -- values against types -----------------------------------------------------------------
    def value(self, node: yaml.Node, type_: ir.Type, where: str, top: bool) -> bool:
        """Report where `node` does not fit `type_` (E404); True when it fits."""
        before = len(self.diagnostics)
        self._fit(node, type_, where, top)
        return len(self.diagnostics) == before

    def _fit(self, node: yaml.Node, type_: ir.Type, where: str, nullable: bool) -> None:
        if isinstance(node, yaml.ScalarNode) and plain(node) is None:
            if isinstance(type_, ir.OptionalType) or nullable:
                return  # a null value at the top is a tombstone
            self.error(node_span(node), "E404", f"{where}: null where {type_} is expected")
            return
        if isinstance(type_, ir.OptionalType):
            self._fit(node, type_.inner, where, False)
            return
        if isinstance(type_, ir.PrimType):
            value = _scalar(node)
            fits = _fits(type_.name, value)
            if not fits:
                hints: tuple[str, ...] = ()
                if type_.name == "time":
                    hints = (_TIME_HINT,)
                elif type_.name in ("str", "bytes") and value is not _NOT_SCALAR:
                    hints = (
                        f"YAML reads this as {_yaml_kind(value)}; quote it to make it a string",
                    )
                self.error(
                    node_span(node),
                    "E404",
                    f"{where}: expected {type_.name}, got {_describe(node)}",
                    hints,
                )
            return
        if isinstance(type_, ir.ListType):
            if not isinstance(node, yaml.SequenceNode):
                self.error(
                    node_span(node), "E404", f"{where}: expected {type_}, got {_describe(node)}"
                )
                return
            for i, item in enumerate(node.value):
                self._fit(item, type_.item, f"{where}[{i}]", False)
            return
        if isinstance(type_, ir.RecordType):
            record = self.records.get(type_.name)
            if record is None:
                return
            if not isinstance(node, yaml.MappingNode):
                self.error(
                    node_span(node),
                    "E404",
                    f"{where}: expected a record {record.name}, got {_describe(node)}",
                )
                return
            fields = {f.name: f for f in record.fields}
            given: set[str] = set()
            for key_node, value_node in node.value:
                name = _scalar(key_node)
                field = fields.get(name) if isinstance(name, str) else None
                if field is None:
                    self.error(
                        node_span(key_node),
                        "E404",
                        f"record {record.name} has no field {_show(name)}",
                        did_you_mean(str(name), fields),
                    )
                    continue
                given.add(field.name)
                self._fit(value_node, field.type, f"{record.name}.{field.name}", False)
            missing = [
                f.name
                for f in record.fields
                if f.name not in given
                and f.default is None
                and not isinstance(f.type, ir.OptionalType)
            ]
            if missing:
                names = ", ".join(f"'{m}'" for m in missing)
                self.error(
                    node_span(node),
                    "E404",
                    f"{where}: record {record.name} needs field{'s' if len(missing) > 1 else ''} "
                    f"{names}",
                )
            return
        # Tuples, events and `any` are not topic types.

    # -- expectations -------------------------------------------------------------------------
    def expectations(self, node: yaml.Node) -> list[TopicExpectation]:
        if isinstance(node, yaml.ScalarNode) and plain(node) is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.error(node_span(node), "E402", "`expect` is a mapping of topics to records")
            return []
        out: list[TopicExpectation] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            topic = self.topic(key_node)
            if topic is None:
                continue
            if topic.kafka_name in seen:
                self.error(node_span(key_node), "E402", f"topic {topic.name} is expected twice")
                continue
            seen.add(topic.kafka_name)
            order = "partition"
            items_node = value_node
            if isinstance(value_node, yaml.MappingNode):
                entries = self.mapping(
                    value_node, f"the expectation of topic {topic.name}", _ORDERED_KEYS
                )
                if entries is None:
                    continue
                if "order" in entries:
                    order_node = entries["order"][1]
                    order = _scalar(order_node)
                    if order not in ORDERS:
                        self.error(
                            node_span(order_node),
                            "E407",
                            f"`order` is 'partition' (the default) or 'set', got {_show(order)}",
                        )
                        continue
                if "records" not in entries:
                    self.error(node_span(value_node), "E402", "an expectation needs `records:`")
                    continue
                items_node = entries["records"][1]
            records = []
            for item in self.sequence(items_node, f"the records of topic {topic.name}"):
                entries_r = self.mapping(item, "an expected record", _RECORD_KEYS)
                if entries_r is None:
                    continue
                fields = self.message(
                    entries_r, topic, item, "an expected record", require_value=False
                )
                if fields is not None:
                    records.append(ExpectedRecord(fields, node_span(item)))
            out.append(
                TopicExpectation(
                    _scalar(key_node),
                    topic.kafka_name,
                    str(order),
                    tuple(records),
                    node_span(key_node),
                )
            )
        return out

    def dead_letter(self, node: yaml.Node) -> ExpectedDeadLetter | None:
        entries = self.mapping(node, "an expected dead letter", _DEAD_KEYS)
        if entries is None:
            return None
        fields: dict[str, Any] = {}
        ok = True
        for name, (_, value_node) in entries.items():
            value = _scalar(value_node)
            if name == "topic":
                topic = self.topic(value_node)
                ok &= topic is not None
                fields["topic"] = topic.kafka_name if topic is not None else None
            elif name == "agent":
                ok &= bool(self.agents_named(value_node))
                fields["agent"] = value
            elif name == "partition":
                if not _is_int(value):
                    self.error(node_span(value_node), "E407", "`partition` is a number")
                    ok = False
                fields["partition"] = value
            elif not isinstance(value, str) and not (name == "key" and value is None):
                self.error(node_span(value_node), "E407", f"`{name}` is a string")
                ok = False
            else:
                fields[name] = value
        return ExpectedDeadLetter(fields, node_span(node)) if ok else None

    def agents_named(self, node: yaml.Node) -> list[str]:
        """The agents of a dead letter's `agent:` (several when a message failed to decode)."""
        text = _scalar(node)
        known = [a.name for a in self.program.agents]
        if not isinstance(text, str):
            self.error(node_span(node), "E405", "`agent` names agents, separated by commas")
            return []
        names = [n.strip() for n in text.split(",")]
        for name in names:
            if name not in known:
                hints = did_you_mean(name, known) or (f"agents: {', '.join(known)}",)
                self.error(node_span(node), "E405", f"the program has no agent '{name}'", hints)
                return []
        return names
