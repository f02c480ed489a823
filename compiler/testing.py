"""`streamc test`: run the cases of test files on the in-memory broker with a virtual clock.

Each case gets a fresh import of the generated worker package, a fresh `MemoryBroker` and its
own event loop whose `time()` is virtual (`VirtualClockLoop`). The runtime reads time only
through the loop (`take ... within` deadlines, commit intervals, fetch timeouts), so nothing in
the runtime changes: the clock moves when a case says `advance: 10s`, firing every timer that
falls due on the way, in order; and while the worker is busy and only a timer can move it on
(a hook awaiting `asyncio.sleep(1)`), the clock jumps to that timer, so a sleep takes its
virtual time and no real time. When the worker is idle, the clock stands still: a case ends
with what the worker produced by then, and a partial `take` batch whose `within` has not
passed is not emitted (unlike `streamc run`, which drains it).

The expectations are compared with what the topics hold once the worker is idle after the
last step (see docs/testing.md for the rules); `--update` writes that back into the file.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import importlib
import io
import selectors
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from . import ir
from .diagnostics import Diagnostic, render
from .testfile import (
    SUFFIX,
    Advance,
    Case,
    ExpectedRecord,
    ExpectedRow,
    TableExpectation,
    TestFile,
    check_test_file,
    program_path_for,
    test_path_for,
)
from .testfile_update import Produced

# Timestamps of records the case does not stamp: the virtual clock, from this instant
# (2024-01-01T00:00:00Z), so runs are reproducible.
EPOCH_MS = 1_704_067_200_000
# A case that never gets quiet (a cycle) is stopped after this many records or real seconds.
MAX_RECORDS = 100_000
REAL_TIME_LIMIT = 30.0


# ---------------------------------------------------------------------------------------------
# The virtual clock


class _ClockSelector(selectors.DefaultSelector):
    """Never blocks: where the loop would sleep until its next timer, it asks the clock."""

    on_quiet: Callable[[float | None], None] | None = None
    on_turn: Callable[[], None] | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.on_turn is not None:
            self.on_turn()
        if (timeout is None or timeout > 0) and self.on_quiet is not None:
            self.on_quiet(timeout)  # nothing is ready and no timer is due
        return super().select(0)


@dataclass
class _Settle:
    """The harness waits until the worker is idle (and the clock at `target`, if given)."""

    done: asyncio.Future[str]
    worker: Any
    target: float | None
    deadline: float  # real time
    max_records: int


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual: it starts at 0 and moves only as the module
    docstring says. Never sleeps for real: an idle loop hands control back to the harness."""

    def __init__(self) -> None:
        self._now = 0.0
        self._waiting: _Settle | None = None
        self.stuck = False
        selector = _ClockSelector()
        super().__init__(selector)
        selector.on_quiet = self._on_quiet
        selector.on_turn = self._on_turn

    def time(self) -> float:
        return self._now

    async def settle(self, worker: Any, target: float | None = None) -> str:
        """Until the worker is idle with nothing due (the clock moved to `target` first):
        "quiet", "stuck" (busy with no timer to wait for), "timeout" or "records"."""
        done: asyncio.Future[str] = self.create_future()
        self._waiting = _Settle(
            done, worker, target, time.monotonic() + REAL_TIME_LIMIT, MAX_RECORDS
        )
        try:
            return await done
        finally:
            self._waiting = None

    def _on_turn(self) -> None:
        waiting = self._waiting
        if waiting is None or waiting.done.done():
            return
        worker = waiting.worker
        if worker.sent + worker.dead_letters > waiting.max_records:
            waiting.done.set_result("records")
        elif time.monotonic() > waiting.deadline:
            waiting.done.set_result("timeout")

    def _on_quiet(self, timeout: float | None) -> None:
        waiting = self._waiting
        if waiting is None:
            # The harness awaits something of the worker's own (its stop): let its timers run.
            if timeout is None:
                self.stuck = True
                self.stop()
            else:
                self._now += timeout
            return
        if waiting.done.done():
            return
        worker = waiting.worker
        if worker.running and not worker.idle():
            if timeout is None:
                waiting.done.set_result("stuck")
            else:
                self._now += timeout  # only a timer can move the busy worker on
            return
        target = waiting.target
        if target is not None and timeout is not None and self._now + timeout <= target + 1e-9:
            self._now += timeout  # the next timer falls due within the advance
            return
        if target is not None and target > self._now:
            self._now = target
        waiting.done.set_result("quiet")


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass
class Outcome:
    file: str
    case: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""  # printed by hooks, logged by the runtime
    # What the program produced, for --update: expect entries, dead letters, table rows.
    produced: Produced | None = None


class InvalidTests(Exception):
    """A test file or its program cannot be run (exit 2); the message says why."""


# ---------------------------------------------------------------------------------------------
# Loading programs and their packages


@dataclass
class _Loaded:
    program: ir.Program
    tests: TestFile
    text: str
    package_dir: Path
    package: str


def _load(test_path: str, workdir: Path, out: Callable[[str], object]) -> _Loaded:
    from .emit import emit
    from .loader import MAX_SDL_BYTES, load, read_limited

    program_path = program_path_for(test_path)
    if not Path(program_path).is_file():
        raise InvalidTests(f"{test_path}: no program {program_path} beside it")
    result = load(Path(program_path))
    if result.diagnostics:
        out(render(result.diagnostics, result.sources))
    if result.program is None or any(d.severity == "error" for d in result.diagnostics):
        raise InvalidTests(f"{program_path}: the program has errors")
    program = result.program
    try:
        text = read_limited(Path(test_path), MAX_SDL_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidTests(f"{test_path}: cannot read: {error}") from None
    tests, diagnostics = check_test_file(text, test_path, program)
    if diagnostics:
        out(render(diagnostics, {test_path: text}))
    if tests is None:
        errors = sum(1 for d in diagnostics if d.severity == "error")
        raise InvalidTests(f"{test_path}: {errors} error{'s' if errors != 1 else ''}")
    files = emit(program)
    package = next(p.parts[0] for p in files if p.name == "__main__.py")
    root = workdir / f"{len(list(workdir.iterdir()))}"
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return _Loaded(program, tests, text, root, package)


def check_beside(program_path: str, program: ir.Program) -> list[Diagnostic] | None:
    """`streamc check`: the diagnostics of the program's test file, None if it has none."""
    from .loader import MAX_SDL_BYTES, read_limited

    path = test_path_for(program_path)
    if not Path(path).is_file():
        return None
    try:
        text = read_limited(Path(path), MAX_SDL_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        from .diagnostics import Diagnostic as D

        return [D.error(path, None, "E401", f"cannot read the test file: {error}")]
    return check_test_file(text, path, program)[1]


@contextmanager
def fresh_helper_modules(program: ir.Program, package_dir: Path, package: str) -> Iterator[None]:
    """The local modules the hooks import (`helpers`, in the package's hooks/_local) are
    imported afresh inside, and forgotten after.

    They are top-level modules, outside the package's namespace: left in `sys.modules`, the
    next program whose hooks import a `helpers` of its own would get this one, and the next
    case this one's module state. A module of the same name imported before is put back.
    """
    names = [h.module for h in program.helper_modules]
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    local = str(package_dir / package / "hooks" / "_local")  # as hooks/__init__ names it
    try:
        yield
    finally:
        while local in sys.path:
            sys.path.remove(local)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@contextmanager
def _imported(loaded: _Loaded) -> Iterator[Any]:
    """A fresh import of the worker package: its App, hooks and module state are the case's."""
    sys.path.insert(0, str(loaded.package_dir))
    try:
        with fresh_helper_modules(loaded.program, loaded.package_dir, loaded.package):
            try:
                app = importlib.import_module(f"{loaded.package}.app").app
                importlib.import_module(f"{loaded.package}.agents")
            except (Exception, SystemExit) as error:  # `sys.exit()` in a hooks module too
                raise InvalidTests(
                    f"{loaded.tests.path}: importing the program failed: "
                    f"{type(error).__name__}: {error}"
                ) from None
            yield app
    finally:
        sys.path.remove(str(loaded.package_dir))
        for name in [
            m for m in sys.modules if m == loaded.package or m.startswith(loaded.package + ".")
        ]:
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------
# Running one case


def run_case(loaded: _Loaded, case: Case) -> Outcome:
    """Run one case; what its hooks print and the runtime logs is kept in `output`."""
    started = time.perf_counter()
    loop = VirtualClockLoop()
    captured = io.StringIO()
    try:
        with _imported(loaded) as app, redirect_stdout(captured), redirect_stderr(captured):
            try:
                outcome = loop.run_until_complete(_run(loop, app, loaded, case))
            except RuntimeError as error:
                if not loop.stuck:
                    raise
                outcome = Outcome(
                    loaded.tests.path, case.name, False, [f"the case is stuck: {error}"]
                )
    finally:
        loop.close()
    outcome.seconds = time.perf_counter() - started
    output = captured.getvalue()
    folder = Path(program_path_for(loaded.tests.path)).parent
    for module in loaded.program.hook_modules:  # tracebacks name the user's hook files
        copy = loaded.package_dir / loaded.package / "hooks" / f"{module.module}.py"
        output = output.replace(str(copy), str(folder / module.source_path))
    outcome.output = output
    return outcome


async def _run(loop: VirtualClockLoop, app: Any, loaded: _Loaded, case: Case) -> Outcome:
    from streamc_runtime.local import _busy_lines, encode_input, table_topics, tables_caught_up
    from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport
    from streamc_runtime.worker import Worker

    produced: list[MemoryMessage] = []
    broker = MemoryBroker(clock=lambda: EPOCH_MS + round(loop.time() * 1000))
    broker.on_produce = produced.append
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    if case.agents is not None:
        app.agents = [a for a in app.agents if a.name in case.agents]
    worker = Worker(app, MemoryTransport(broker, app.name), stats_interval=0)
    inputs: set[int] = set()  # ids of the messages the case produced
    problems: list[str] = []
    table_inputs = table_topics(app)
    # Whether the inputs produced since the worker last settled are table-topic records (None:
    # none since). Before a table record follows stream records, or a stream record table
    # records, the worker settles: a join sees exactly the table records listed before it.
    produced_kind: bool | None = None
    await worker.start()
    try:
        for step in case.steps:
            if isinstance(step, Advance):
                produced_kind = None
                status = await loop.settle(worker)
                if status == "quiet":
                    status = await loop.settle(worker, loop.time() + step.seconds)
            else:
                kind = step.topic in table_inputs
                if produced_kind is not None and kind is not produced_kind:
                    status = await loop.settle(worker)
                    if status != "quiet":
                        break
                if not kind and produced_kind is not False:
                    await tables_caught_up(worker, broker)  # global tables read by themselves
                produced_kind = kind
                try:
                    key, value, partition, headers, timestamp = encode_input(
                        app.topics[step.topic], step.fields
                    )
                except ValueError as error:
                    raise InvalidTests(f"{loaded.tests.path}:{step.span.line}: {error}") from None
                before = len(produced)
                broker.produce(step.topic, value, key, headers, partition, timestamp)
                inputs.update(id(m) for m in produced[before:])
                continue
            if status != "quiet":
                break
        else:
            status = await loop.settle(worker)
        if status != "quiet":
            problems.append(_why(status) + _busy_lines(worker))
        snapshot = list(produced)
        # The rows as builtins now: the stop may still change the stores.
        tables = {
            t.name: _table_views(app.tables[t.name], worker.table(t.name))
            for t in loaded.program.tables
        }
    finally:
        worker.shutdown_timeout = 0  # what happens at the stop is not part of the case
        await worker.stop()
    if worker.failure is not None:
        problems.append(f"the worker failed: {type(worker.failure).__name__}: {worker.failure}")
    written = [m for m in snapshot if id(m) not in inputs]
    result = _compare(loaded.program, app, case, snapshot, written, problems, tables)
    return result


def _why(status: str) -> str:
    if status == "stuck":
        return "the worker is stuck: an agent waits for something that never comes"
    if status == "timeout":
        return f"the case ran for more than {REAL_TIME_LIMIT:g} real seconds"
    return (
        f"the worker wrote more than {MAX_RECORDS:,} records; does an agent read a topic "
        "that it or another agent writes (a cycle)?"
    )


# ---------------------------------------------------------------------------------------------
# Comparing


def _text(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(data).decode()}


_FORMS = ("value", "raw", "raw_base64")


def _builtin(obj: Any) -> Any:
    """A value msgspec does not turn into builtins by itself: the runtime's `Time` (a datetime
    subclass) as the wire writes it, RFC 3339 in UTC with milliseconds."""
    if isinstance(obj, datetime.datetime):
        moment = obj.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
        return moment.replace("+00:00", "Z")
    raise NotImplementedError(f"no builtin form of {type(obj).__name__}")


def _value_form(topic: Any, data: bytes | None) -> dict[str, Any]:
    """A value as the test file writes it: `value` when it decodes as the topic's type (or
    is text on a bytes topic), else `raw` (text) or `raw_base64`."""
    if data is None:
        return {"value": None}
    if topic.value_type is bytes:
        text = _text(data)
        return {"value": text} if isinstance(text, str) else text
    try:
        return {"value": msgspec.to_builtins(topic.value_codec.decode(data), enc_hook=_builtin)}
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        text = _text(data)
        return {"raw": text} if isinstance(text, str) else text


def _key_view(topic: Any, data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return msgspec.to_builtins(topic.key_codec.decode(data), enc_hook=_builtin)
    except Exception:  # a key the type cannot read is shown as its bytes
        return _text(data)


def _view(topic: Any, message: Any) -> dict[str, Any]:
    return {
        "key": _key_view(topic, message.key),
        **_value_form(topic, message.value),
        "headers": {k: v.decode("utf-8", "replace") for k, v in message.headers},
        "partition": message.partition,
        "timestamp": message.timestamp,
    }


def _expected_view(topic: Any, record: ExpectedRecord) -> dict[str, Any]:
    """What the record must look like, through the same encoding and decoding as the actual
    one (so `amount: 1500` and 1500.0 agree, and defaults are filled in on both sides)."""
    from streamc_runtime.local import encode_input

    fields = record.fields
    has_value = any(f in fields for f in ("value", "raw", "raw_base64"))
    obj = dict(fields) if has_value else {**fields, "value": None}
    key, value, _, _, _ = encode_input(topic, obj)
    view: dict[str, Any] = {}
    if "key" in fields:
        view["key"] = _key_view(topic, key)
    if has_value:
        view.update(_value_form(topic, value))
    for name in ("headers", "partition", "timestamp"):
        if name in fields:
            view[name] = fields[name]
    return view


def _restricted(actual: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The fields of `actual` that `expected` compares (its value in whatever form it has),
    in `expected`'s order."""
    out: dict[str, Any] = {}
    for name in expected:
        if name not in _FORMS:
            out[name] = actual[name]
        elif not any(f in out for f in _FORMS):
            out.update({f: actual[f] for f in _FORMS if f in actual})
    return out


def _first_difference(expected: Any, actual: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for name in list(expected) + [k for k in actual if k not in expected]:
            sub = f"{path}.{name}" if path else str(name)
            if name not in actual:
                return sub, expected[name], _MISSING
            if name not in expected:
                return sub, _MISSING, actual[name]
            found = _first_difference(expected[name], actual[name], sub)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            found = _first_difference(e, a, f"{path}[{i}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{path} (length)", len(expected), len(actual)
        return None
    if expected == actual and type(expected) is not bool and type(actual) is not bool:
        return None
    if expected == actual and type(expected) is type(actual):
        return None
    return path or "(whole value)", expected, actual


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _flow(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _compare(
    program: ir.Program,
    app: Any,
    case: Case,
    everything: list[Any],
    written: list[Any],
    problems: list[str],
    tables: dict[str, dict[_RowId, dict[str, Any]]],
) -> Outcome:
    names = {t.kafka_name: t.name for t in program.topics}
    by_topic: dict[str, list[Any]] = {}
    for message in everything:
        by_topic.setdefault(message.topic, []).append(message)
    expected_topics = {e.topic for e in case.expect}
    for expectation in case.expect:
        topic = app.topics[expectation.topic]
        actual = [(m, _view(topic, m)) for m in by_topic.get(expectation.topic, [])]
        problems.extend(_compare_topic(expectation, topic, actual))
    # dead letters: absent in the case means none are expected
    dlq = [m for m in everything if m.topic == app.dlq.name]
    problems.extend(_compare_dead(case, dlq, names))
    # what the program produced, for --update
    expect_out: list[tuple[str, str, list[dict[str, Any]]]] = []
    written_topics = {m.topic for m in written}
    kinds = {t.kafka_name: t.kind for t in program.topics}
    for t in program.topics:
        name = t.kafka_name
        listed = name in expected_topics
        if not listed and (name not in written_topics or kinds[name] == "repartition"):
            continue
        order = next((e.order for e in case.expect if e.topic == name), "partition")
        topic = app.topics[name]
        records = []
        for m in by_topic.get(name, []):
            view = _view(topic, m)
            entry: dict[str, Any] = {}
            if view["key"] is not None:
                entry["key"] = view["key"]
            entry.update({f: view[f] for f in _FORMS if f in view})
            if view["headers"]:
                entry["headers"] = view["headers"]
            records.append(entry)
        label = next((e.name for e in case.expect if e.topic == name), t.name)
        expect_out.append((label, order, records))
    dead_out = [_dead_view(m, names) for m in dlq]
    for table_expectation in case.tables:
        problems.extend(
            _compare_table(
                table_expectation,
                app.tables[table_expectation.name],
                tables[table_expectation.name],
            )
        )
    # tables for --update: those the case lists, and those holding rows
    listed_tables = {e.name for e in case.tables}
    tables_out = [
        (name, [_shown_row(v) for _, v in sorted(rows.items())])
        for name, rows in tables.items()
        if rows or name in listed_tables
    ]
    return Outcome(
        "", case.name, not problems, problems, produced=(expect_out, dead_out, tables_out)
    )


def _compare_topic(
    expectation: Any, topic: Any, actual: list[tuple[Any, dict[str, Any]]]
) -> list[str]:
    label = f"topic {expectation.name}"
    remaining = list(actual)  # in the order produced
    problems: list[str] = []
    for i, record in enumerate(expectation.records, 1):
        want = _expected_view(topic, record)
        if expectation.order == "set":
            candidates = remaining
        else:  # only the first unmatched record of each partition may match
            heads: dict[int, tuple[Any, dict[str, Any]]] = {}
            for item in remaining:
                heads.setdefault(item[0].partition, item)
            candidates = [item for item in remaining if heads.get(item[0].partition) is item]
        if "partition" in want:
            candidates = [c for c in candidates if c[0].partition == want["partition"]]
        match = next(
            (c for c in candidates if _first_difference(want, _restricted(c[1], want)) is None),
            None,
        )
        if match is not None:
            remaining.remove(match)
            continue
        problems.append(_mismatch(label, i, record, want, candidates, remaining))
        return problems  # later records would only repeat the same shift
    if remaining:
        extra = remaining[0][1]
        more = f" (and {len(remaining) - 1} more)" if len(remaining) > 1 else ""
        problems.append(
            f"{label}: {len(remaining)} record{'s' if len(remaining) > 1 else ''} more than "
            f"expected; the first, at partition {extra['partition']}, offset "
            f"{remaining[0][0].offset}:\n      actual:   {_flow(_shown(extra))}{more}"
        )
    return problems


def _shown(view: dict[str, Any]) -> dict[str, Any]:
    out = {"key": view["key"], **{f: view[f] for f in _FORMS if f in view}}
    if view.get("headers"):
        out["headers"] = view["headers"]
    return out


def _mismatch(
    label: str,
    index: int,
    record: ExpectedRecord,
    want: dict[str, Any],
    candidates: list[tuple[Any, dict[str, Any]]],
    remaining: list[tuple[Any, dict[str, Any]]],
) -> str:
    head = f"{label}, record {index} (line {record.span.line})"
    if not remaining:
        return (
            f"{head} was not produced (the topic holds fewer records):\n"
            f"      expected: {_flow(want)}"
        )
    pool = candidates or remaining
    # the most similar actual record: same key first, then the earliest
    nearest = next((c for c in pool if "key" in want and c[1]["key"] == want["key"]), pool[0])
    got = _restricted(nearest[1], want)
    diff = _first_difference(want, got)
    assert diff is not None
    where, e, a = diff
    return (
        f"{head} does not match: at {where}: expected {_flow(e)}, got {_flow(a)}\n"
        f"      expected: {_flow(want)}\n"
        f"      actual:   {_flow(got)} (partition {nearest[0].partition}, offset "
        f"{nearest[0].offset})"
    )


# A table row's identity: its key (as flow text, so any key type is hashable and sorts) and,
# in a windowed table, its window in epoch ms.
_RowId = tuple[str, tuple[int, int] | None]


def _table_views(table: Any, rows: dict[Any, Any]) -> dict[_RowId, dict[str, Any]]:
    """The rows of `worker.table(...)` as builtins by identity: {key, window?, value}."""
    out: dict[_RowId, dict[str, Any]] = {}
    for raw_key, row in rows.items():
        key, window = (
            (raw_key[0], (raw_key[1].start_ms, raw_key[1].end_ms))
            if table.window is not None
            else (raw_key, None)
        )
        shown_key = _text(key) if isinstance(key, bytes) else _builtins(key)
        view: dict[str, Any] = {"key": shown_key}
        if window is not None:
            view["window"] = window
        view["value"] = _builtins(row)
        out[(_flow(shown_key), window)] = view
    return out


def _builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj, enc_hook=_builtin)


def _expected_row_view(table: Any, row: ExpectedRow) -> dict[str, Any]:
    """The expected row through the table's own types, as the actual rows are read (so
    `amount: 10` and 10.0 agree, a time in epoch ms and in RFC 3339 too, and a field left out
    equals its default)."""
    from streamc_runtime.records import key_codec, value_codec

    key = row.fields["key"]
    if table.key_type not in (str, int, bytes):
        key = _builtins(key_codec(table.key_type).decode(msgspec.json.encode(key)))
    view: dict[str, Any] = {"key": key}
    if "window" in row.fields:
        view["window"] = row.fields["window"]
    if "value" in row.fields:
        codec = value_codec(table.value_type)
        view["value"] = _builtins(codec.decode(msgspec.json.encode(row.fields["value"])))
    return view


def _shown_row(view: dict[str, Any]) -> dict[str, Any]:
    """A row as a test file writes it: the window as RFC 3339 text."""
    if "window" not in view:
        return view
    start, end = view["window"]
    return {**view, "window": [_time_text(start), _time_text(end)]}


def _time_text(ms: int) -> str:
    from streamc_runtime.records import Time

    return str(_builtin(Time.from_ms(ms)))


def _compare_table(
    expectation: TableExpectation, table: Any, actual: dict[_RowId, dict[str, Any]]
) -> list[str]:
    """Rows are matched by key (and window), in any order; the table holds no other rows."""
    remaining = dict(actual)
    problems: list[str] = []
    for i, row in enumerate(expectation.rows, 1):
        want = _expected_row_view(table, row)
        head = f"table {expectation.name}, row {i} (line {row.span.line})"
        got = remaining.pop((_flow(want["key"]), want.get("window")), None)
        if got is None:
            where = f"key {_flow(want['key'])}"
            if "window" in want:
                where += f" and window {_flow(_shown_row(want)['window'])}"
            problems.append(
                f"{head} is not in the table (no row has {where}):\n"
                f"      expected: {_flow(_shown_row(want))}"
            )
            continue
        if "value" not in want:
            continue
        diff = _first_difference(want["value"], got["value"], "value")
        if diff is not None:
            path, e, a = diff
            problems.append(
                f"{head} does not match: at {path}: expected {_flow(e)}, got {_flow(a)}\n"
                f"      expected: {_flow(_shown_row(want))}\n"
                f"      actual:   {_flow(_shown_row(got))}"
            )
    if remaining:
        extra = [_shown_row(v) for _, v in sorted(remaining.items())]
        lines = "".join(f"\n      actual:   {_flow(v)}" for v in extra[:_SHOWN_ROWS])
        more = f"\n      (and {len(extra) - _SHOWN_ROWS} more)" if len(extra) > _SHOWN_ROWS else ""
        problems.append(
            f"table {expectation.name}: {len(extra)} row{'s' if len(extra) > 1 else ''} more "
            f"than expected:{lines}{more}"
        )
    return problems


_SHOWN_ROWS = 5


def _dead_view(message: Any, names: dict[str, str]) -> dict[str, Any]:
    headers = {k: v.decode("utf-8", "replace") for k, v in message.headers}
    source = headers.get("streamc.source.topic", "")
    view: dict[str, Any] = {"topic": names.get(source, source)}
    if message.key is not None:
        view["key"] = _text(message.key)
    view["agent"] = headers.get("streamc.agent", "")
    view["type"] = headers.get("streamc.error.type", "")
    view["error"] = headers.get("streamc.error", "")
    return view


def _compare_dead(case: Case, dlq: list[Any], names: dict[str, str]) -> list[str]:
    expected = case.dead_letters or ()
    actual = [(m, _dead_view(m, names)) for m in dlq]
    full = [(m, {k: v.decode("utf-8", "replace") for k, v in m.headers}) for m in dlq]
    remaining = list(range(len(actual)))
    problems: list[str] = []
    for i, letter in enumerate(expected, 1):
        f = letter.fields

        def fits(j: int, f: dict[str, Any] = f) -> bool:
            message, headers = full[j]
            if "topic" in f and headers.get("streamc.source.topic") != f["topic"]:
                return False
            if "agent" in f and headers.get("streamc.agent") != f["agent"]:
                return False
            if "type" in f and headers.get("streamc.error.type") != f["type"]:
                return False
            if "error" in f and f["error"] not in headers.get("streamc.error", ""):
                return False
            if "partition" in f and headers.get("streamc.source.partition") != str(f["partition"]):
                return False
            if "key" in f and (None if message.key is None else _text(message.key)) != f["key"]:
                return False
            if "raw" in f and _text(message.value or b"") != f["raw"]:
                return False
            return not (
                "raw_base64" in f
                and base64.b64encode(message.value or b"").decode() != f["raw_base64"]
            )

        match = next((j for j in remaining if fits(j)), None)
        if match is None:
            shown = {k: (names.get(v, v) if k == "topic" else v) for k, v in f.items()}
            nearest = (
                f"\n      nearest:  {_flow(actual[remaining[0]][1])}"
                if remaining
                else " (no dead letter is left to match)"
            )
            problems.append(
                f"dead letter {i} (line {letter.span.line}) was not produced:\n"
                f"      expected: {_flow(shown)}{nearest}"
            )
            continue
        remaining.remove(match)
    if remaining:
        extra = [actual[j][1] for j in remaining]
        lines = "".join(f"\n      actual:   {_flow(v)}" for v in extra)
        problems.append(
            f"{len(extra)} unexpected dead letter{'s' if len(extra) > 1 else ''}"
            f"{'' if case.dead_letters is not None else ' (the case expects none)'}:{lines}"
        )
    return problems


# ---------------------------------------------------------------------------------------------
# The command


def find_test_files(paths: Sequence[str]) -> list[str]:
    """Test files named by `paths`: folders (searched, skipping hidden ones), programs (their
    test file beside them) or test files. Raises InvalidTests for a path that names none."""
    found: list[str] = []
    for raw in paths or ["."]:
        path = Path(raw)
        if path.is_dir():
            for candidate in sorted(path.rglob(f"*{SUFFIX}")):
                relative = candidate.relative_to(path).parts
                if not any(part.startswith(".") for part in relative[:-1]):
                    found.append(str(candidate))
        elif raw.endswith(".sdl"):
            beside = test_path_for(raw)
            if not Path(beside).is_file():
                raise InvalidTests(f"{raw}: no test file {beside} beside it")
            found.append(beside)
        elif raw.endswith(SUFFIX) and path.is_file():
            found.append(raw)
        else:
            raise InvalidTests(f"{raw}: not a folder, a .sdl program or a test file (*{SUFFIX})")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InvalidTests(f"no test files (*{SUFFIX}) in {', '.join(paths or ['.'])}")
    return unique


def run_tests(
    paths: Sequence[str],
    pattern: str | None = None,
    junit_xml: str | None = None,
    update: bool = False,
    out: Callable[[str], object] | None = None,
    err: Callable[[str], object] | None = None,
) -> int:
    """The `streamc test` command; returns the exit status."""
    out = out or sys.stdout.write
    err = err or sys.stderr.write
    from .testfile_update import update_text

    try:
        test_files = find_test_files(paths)
    except InvalidTests as error:
        err(f"streamc test: {error}\n")
        out("0 passed, 0 failed\n")
        return 2
    outcomes: list[Outcome] = []
    invalid = 0
    with tempfile.TemporaryDirectory(prefix="streamc-test-") as workdir:
        for test_path in test_files:
            try:
                loaded = _load(test_path, Path(workdir), err)
                selected = [
                    c
                    for c in loaded.tests.cases
                    if not pattern or pattern.lower() in c.name.lower()
                ]
                results = []
                for case in selected:
                    outcome = run_case(loaded, case)
                    outcome.file = test_path
                    results.append(outcome)
                    _report(outcome, out, update)
            except InvalidTests as error:
                err(f"{error}\n")
                invalid += 1
                continue
            outcomes.extend(results)
            if update and results:
                produced = {o.case: o.produced for o in results if o.produced is not None}
                new_text = update_text(loaded.text, produced)
                if new_text != loaded.text:
                    Path(test_path).write_text(new_text, encoding="utf-8")
                    out(f"updated {test_path}\n")
    if junit_xml:
        _write_junit(junit_xml, outcomes)
    passed = sum(1 for o in outcomes if o.passed or update)
    failed = len(outcomes) - passed
    if invalid:
        err(f"{invalid} test file{'s' if invalid > 1 else ''} could not be run\n")
    out(f"{passed} passed, {failed} failed\n")
    if invalid:
        return 2
    return 1 if failed else 0


def _report(outcome: Outcome, out: Callable[[str], object], update: bool) -> None:
    if update:
        out(f"updated {outcome.file}::{outcome.case}\n")
        return
    status = "PASS" if outcome.passed else "FAIL"
    out(f"{status} {outcome.file}::{outcome.case}\n")
    for problem in outcome.problems:
        out(f"    {problem}\n")
    if outcome.problems and outcome.output:
        out("    output of the case:\n")
        out("".join(f"      | {line}\n" for line in outcome.output.splitlines()))


def _write_junit(path: str, outcomes: Sequence[Outcome]) -> None:
    suites = ET.Element("testsuites")
    files: dict[str, list[Outcome]] = {}
    for o in outcomes:
        files.setdefault(o.file, []).append(o)
    for name, items in files.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=name,
            tests=str(len(items)),
            failures=str(sum(1 for o in items if not o.passed)),
            errors="0",
            time=f"{sum(o.seconds for o in items):.3f}",
        )
        for o in items:
            case = ET.SubElement(
                suite, "testcase", classname=name, name=o.case, time=f"{o.seconds:.3f}"
            )
            if not o.passed:
                failure = ET.SubElement(
                    case, "failure", message=o.problems[0].splitlines()[0] if o.problems else ""
                )
                failure.text = "\n".join(o.problems)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
