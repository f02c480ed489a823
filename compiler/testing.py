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
last step (`testing_compare.py`; docs/testing.md gives the rules); `--update` writes that
back into the file.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import selectors
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ir
from .diagnostics import Diagnostic, render
from .testfile import (
    SUFFIX,
    Advance,
    Case,
    TestFile,
    check_test_file,
    program_path_for,
    test_path_for,
)
from .testing_compare import Outcome, _compare, _table_views

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
# Test files that cannot run


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
