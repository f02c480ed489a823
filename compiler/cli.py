"""The `streamc` command: check, build, run, test, graph and format `.sdl` programs.

This is the only part of the compiler that writes files, and it never writes outside the
folder it was given, nor changes a file there that the folder's manifest does not say streamc
wrote. Exit status: 0 success (warnings included), 1 errors or a failed check, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, NoReturn

from . import ir
from .manifest import MANIFEST, digest, digests_text, parse_manifest, with_manifest

if TYPE_CHECKING:
    from .loader import LoadResult

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake on the command line (exit 2)."""


class Failure(Exception):
    """The command ran and did not succeed (exit 1); the message says why."""


# ---------------------------------------------------------------------------------------------
# Shared steps


def _load(path: str, roots: Sequence[str] = ()) -> ir.Program:
    program = _load_result(path, roots).program
    assert program is not None
    return program


def _load_result(path: str, roots: Sequence[str] = ()) -> LoadResult:
    """Load and check `path`, printing its diagnostics; Failure if any is an error."""
    from .diagnostics import render
    from .loader import load

    result = load(Path(path), [Path(root) for root in roots])
    if result.diagnostics:
        sys.stderr.write(render(result.diagnostics, result.sources))
        errors = sum(1 for d in result.diagnostics if d.severity == "error")
        if result.program is None or errors:
            more = "" if result.complete else " (stopped there: the rest of the file was not read)"
            raise Failure(f"{path}: {errors} error{'s' if errors != 1 else ''}{more}")
    assert result.program is not None
    return result


def _emit(program: ir.Program) -> dict[PurePosixPath, str]:
    from .emit import emit

    return emit(program)


def _inside(root: Path, relative: PurePosixPath) -> Path:
    """The path of `relative` under `root`, refusing anything that would leave it."""
    if relative.is_absolute() or ".." in relative.parts:
        raise Failure(f"refusing to write {relative}: outside the output folder")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise Failure(f"refusing to write {relative}: outside the output folder")
    return target


def _previous_build(root: Path) -> dict[PurePosixPath, str] | None:
    """What the last build wrote into `root` (path -> digest); {} for a new or empty folder.

    None when `root` holds files but no manifest: streamc cannot tell its files from the
    user's there, so it must not write into it.
    """
    if not root.exists():
        return {}
    if not root.is_dir():
        raise Failure(f"refusing to build into {root}: it is not a folder")
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None if any(root.iterdir()) else {}
    from .loader import MAX_HOOK_BYTES, read_limited  # a manifest is bounded like any file

    text = read_limited(manifest, MAX_HOOK_BYTES).decode("utf-8", errors="replace")
    previous = parse_manifest(text)
    if previous is None:
        raise Failure(f"refusing to build into {root}: {manifest} is not a streamc manifest")
    return previous


def _stale_files(root: Path, files: Mapping[PurePosixPath, str]) -> list[str]:
    """Why `root` is not what building `files` would make: changed, missing or left over."""
    previous = _previous_build(root) if root.is_dir() else {}
    if previous is None:
        return [f"{root} holds files but no {MANIFEST}: it was not written by streamc build"]
    stale = []
    for relative, text in with_manifest(files).items():
        target = root / relative
        if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
            stale.append(str(relative))
    for relative in sorted(set(previous) - set(files)):
        if (root / relative).is_file():
            stale.append(f"{relative} (left over from an earlier build)")
    return stale


def _write_tree(root: Path, files: Mapping[PurePosixPath, str]) -> None:
    """Write `files` and their manifest under `root`, then delete what the last build wrote
    and this one does not (a renamed agent's module, say).

    Files the manifest does not list are the user's and are never touched: a new generated
    file that would replace one is refused. A generated file the user edited is overwritten
    (the manifest says streamc owns it); a left-over one the user edited is kept, and from
    then on it is theirs.
    """
    previous = _previous_build(root)
    if previous is None:
        raise Failure(
            f"refusing to build into {root}: it is not empty and holds no {MANIFEST}, so "
            "streamc cannot tell the files it would replace from yours; build into a new or "
            "empty folder"
        )
    targets = {relative: _inside(root, relative) for relative in files}
    for relative, target in targets.items():
        if relative not in previous and (target.exists() or target.is_symlink()):
            raise Failure(
                f"refusing to overwrite {root / relative}: streamc did not write it (it is "
                f"not in {root / MANIFEST}); move it away and build again"
            )
    root.mkdir(parents=True, exist_ok=True)
    manifest = _inside(root, MANIFEST)
    # Until the end, the manifest lists old and new files, so a build that is interrupted
    # leaves nothing that the next one would take for the user's.
    written = {relative: digest(text.encode("utf-8")) for relative, text in files.items()}
    manifest.write_bytes(digests_text({**previous, **written}).encode("utf-8"))
    for relative, text in files.items():
        target = targets[relative]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
            target.write_bytes(text.encode("utf-8"))
    for relative in sorted(set(previous) - set(files)):
        target = _inside(root, relative)
        if not target.is_file():
            continue
        if digest(target.read_bytes()) != previous[relative]:
            print(f"kept {root / relative}: edited since streamc wrote it", file=sys.stderr)
            continue
        target.unlink()
        for folder in target.parents:  # folders the deletion left empty
            if folder == root.resolve() or any(folder.iterdir()):
                break
            folder.rmdir()
    manifest.write_bytes(with_manifest(files)[MANIFEST].encode("utf-8"))


def _package_name(files: Mapping[PurePosixPath, str]) -> str:
    return next(p.parts[0] for p in files if p.name == "__main__.py")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            program = _load(path, args.allow_root)
            _check_test_file(path, program)
        except Failure as failure:
            print(failure, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return EXIT_DIAGNOSTICS if failed else EXIT_OK


def _check_test_file(path: str, program: ir.Program) -> None:
    """The program's test file beside it (`X.test.yaml`) is checked with it."""
    from .diagnostics import render
    from .testfile import test_path_for
    from .testing import check_beside

    diagnostics = check_beside(path, program)
    if not diagnostics:
        return
    test_path = test_path_for(path)
    text = Path(test_path).read_text("utf-8", "replace")
    sys.stderr.write(render(diagnostics, {test_path: text}))
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if errors:
        raise Failure(f"{test_path}: {errors} error{'s' if errors != 1 else ''}")


def cmd_build(args: argparse.Namespace) -> int:
    result = _load_result(args.file, args.allow_root)
    assert result.program is not None
    files = _emit(result.program)
    out = Path(args.output) if args.output else Path("build") / _package_name(files)
    for source in result.files:
        if source.is_relative_to(out.resolve()):
            raise Failure(
                f"refusing to build into {out}: it holds {source.name}, which the build reads; "
                "choose a folder of its own, such as build/"
            )
    if args.check:
        stale = _stale_files(out, files) if out.is_dir() else [f"{out} does not exist"]
        if stale:
            print(f"{out} is stale; run `streamc build {args.file} -o {out}`:", file=sys.stderr)
            for path in stale:
                print(f"  {path}", file=sys.stderr)
            return EXIT_DIAGNOSTICS
        print(f"{out}: up to date")
        return EXIT_OK
    _write_tree(out, files)
    print(f"wrote {out} ({len(files)} files and {MANIFEST})")
    return EXIT_OK


def _topic_option(program: ir.Program, option: str, spec: str) -> tuple[ir.Topic, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"{option} takes TOPIC=FILE, got {spec!r}")
    for topic in program.topics:
        if name in (topic.name, topic.kafka_name):
            return topic, path
    if name == f"{program.app}-dlq" or (
        name.startswith(f"{program.app}-") and name.endswith("-changelog")
    ):
        # The dead-letter topic, or a table's changelog: their types come from the app.
        internal = ir.Topic(name, name, ir.BYTES, ir.BYTES, 1, "declared")
        return internal, path
    known = [t.name for t in program.topics] + [f"{program.app}-dlq"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; topics: {', '.join(known)}"
    raise UsageError(f"{option}: no topic '{name}'{hint}")


def cmd_run(args: argparse.Namespace) -> int:
    import streamc_runtime.jsonl as jsonl
    from streamc_runtime.local import LocalRunError, LocalRunStopped, run_local
    from streamc_runtime.memory import MemoryBroker

    from .testing import fresh_helper_modules

    program = _load(args.file, args.allow_root)
    # In file order: inputs are produced in timestamp order, ties in file order.
    inputs: list[tuple[str, list[jsonl.Line]]] = []
    for spec in args.input:
        topic, path = _topic_option(program, "--input", spec)
        try:
            inputs.append((topic.kafka_name, jsonl.read(path)))
        except OSError as error:
            raise Failure(f"--input {spec}: cannot read {path}: {error.strerror}") from None
        except ValueError as error:  # names the file and line
            raise Failure(str(error)) from None
    outputs = [_topic_option(program, "--output", spec) for spec in args.output]
    tables = [_table_option(spec) for spec in args.table]

    files = _emit(program)
    with tempfile.TemporaryDirectory(prefix="streamc-run-") as workdir, ExitStack() as opened:
        _write_tree(Path(workdir), files)
        package = _package_name(files)
        hook_paths = _hook_paths(program, files, Path(workdir), Path(args.file))
        opened.enter_context(fresh_helper_modules(program, Path(workdir), package))
        sys.path.insert(0, workdir)
        broker: MemoryBroker | None = None  # none until the run is under way
        try:
            try:
                app = importlib.import_module(f"{package}.app").app
                importlib.import_module(f"{package}.agents")
            except (Exception, SystemExit) as error:  # `sys.exit()` in a hooks module too
                _raise_if_hook_error(error, hook_paths)
                raise
            # Outputs are written as records are produced, so a run that is stopped or killed
            # keeps what it produced until then.
            writer = jsonl.Writer(timestamp=args.timestamps)
            for name, _ in tables:
                if name not in app.tables:
                    known = ", ".join(sorted(app.tables)) or "none"
                    raise UsageError(f"--table: no table '{name}' (tables: {known})")
            for topic, destination in outputs:
                if topic.kafka_name not in app.topics:
                    raise UsageError(f"--output: no topic '{topic.kafka_name}'")
                declared = app.topics[topic.kafka_name]
                out = (
                    sys.stdout
                    if destination == "-"
                    else opened.enter_context(open(destination, "w", encoding="utf-8"))
                )
                writer.add(topic.kafka_name, out, declared.value_type, declared.key_type)
            broker = MemoryBroker()
            broker.on_produce = writer
            progress = _progress_display(args, outputs)
            try:
                asyncio.run(
                    run_local(
                        app,
                        inputs,
                        broker=broker,
                        close_windows=args.close_windows,
                        time_limit=args.timeout,
                        max_records=args.max_records or None,
                        on_progress=progress,
                        progress_interval=progress.interval if progress else 1.0,
                    )
                )
            finally:
                writer.flush()
                if progress is not None:
                    progress.close()
            if writer.error is not None:
                reason = writer.error.strerror or str(writer.error)
                raise Failure(
                    f"streamc run: cannot write the output of {writer.error_topic}: {reason}"
                )
        except ValueError as error:  # an input that does not fit its topic: "file:line: ..."
            raise Failure(str(error)) from None
        except LocalRunStopped as error:
            raise Failure(
                f"streamc run: {_user_paths(str(error), hook_paths)}\n"
                "the outputs hold what was produced until then"
            ) from None
        except LocalRunError as error:
            cause = error.__cause__ or error
            raise Failure(
                f"streamc run: the worker failed: {type(cause).__name__}: {cause}"
            ) from None
        finally:
            sys.path.remove(workdir)
            for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
                del sys.modules[name]
            for name, destination in tables if broker is not None else ():
                _write_table(broker, app.tables[name], destination)
        _summarise(program, broker)
    return EXIT_OK


def _table_option(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"--table takes TABLE=FILE, got {spec!r}")
    return name, path


def _write_table(broker: Any, table: Any, destination: str) -> None:
    """A table's final rows, read from its changelog, as JSON lines sorted by key."""
    import msgspec
    from streamc_runtime.state import table_rows

    rows = table_rows(broker, table)
    lines = [
        msgspec.json.encode({"key": key, "value": rows[key]}).decode() + "\n"
        for key in sorted(rows)
    ]
    if destination == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
        return
    try:
        with open(destination, "w", encoding="utf-8") as out:
            out.writelines(lines)
    except OSError as error:
        raise Failure(f"--table: cannot write {destination}: {error.strerror}") from None


def _hook_paths(
    program: ir.Program, files: Mapping[PurePosixPath, str], workdir: Path, sdl: Path
) -> dict[str, str]:
    """Where each hook module, and each local module the hooks import, copied into the run's
    package came from: {copy: user's path}."""
    paths = {}
    for relative, text in files.items():
        if len(relative.parts) == 3 and relative.parts[1] == "hooks":
            for module in program.hook_modules:
                if module.text == text:
                    paths[str(workdir / relative)] = str(sdl.parent / module.source_path)
                    break
    package = _package_name(files)
    for helper in program.helper_modules:
        copy = PurePosixPath(package, "hooks", "_local", f"{helper.module}.py")
        paths[str(workdir / copy)] = str(sdl.parent / helper.source_path)
    return paths


def _user_paths(text: str, hook_paths: Mapping[str, str]) -> str:
    for copy, original in hook_paths.items():
        text = text.replace(copy, original)
    return text


def _raise_if_hook_error(error: BaseException, hook_paths: Mapping[str, str]) -> None:
    """A hook module that fails at import is the user's mistake: say where, not "a bug"."""
    where: tuple[str, int | None] | None = None
    if isinstance(error, SyntaxError) and error.filename and error.filename in hook_paths:
        where = (hook_paths[error.filename], error.lineno)
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename in hook_paths:  # the innermost hook frame wins
            where = (hook_paths[frame.f_code.co_filename], lineno)
    if where is None:
        return
    path, line = where
    detail = _user_paths(str(error), hook_paths)
    raise Failure(
        f"{path}:{line}: error: importing the hook module failed: {type(error).__name__}"
        + (f": {detail}" if detail else "")
    ) from None


class _Progress:
    """Records in and out on stderr while `streamc run` works: a bar redrawn in place on a
    terminal, else a line every `interval` seconds (quiet for runs shorter than that)."""

    def __init__(self, stream: IO[str], interval: float, bar: bool) -> None:
        self.stream = stream
        self.interval = interval
        self.bar = bar
        self._drawn = False

    def __call__(self, p: Any) -> None:
        counts = (
            f"{p.records_in:,} in, {p.records_out:,} out"
            + (f" ({p.dead_letters:,} dead letters)" if p.dead_letters else "")
            + f", {p.inputs_done:,}/{p.inputs_total:,} read messages done, {p.elapsed:.1f}s"
        )
        if self.bar:
            width = 20
            filled = width * p.inputs_done // p.inputs_total if p.inputs_total else width
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {counts}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"streamc run: {counts}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _progress_display(args: argparse.Namespace, outputs: Sequence[Any]) -> _Progress | None:
    interval = args.progress_interval
    if interval == 0:
        return None
    # A bar rewrites its line in place, which records printed to the same terminal would break.
    to_terminal = any(d == "-" for _, d in outputs) and sys.stdout.isatty()
    bar = sys.stderr.isatty() and not to_terminal
    if interval is None:
        interval = 0.2 if bar else 5.0
    return _Progress(sys.stderr, interval, bar)


def _duration(text: str) -> float:
    """`30s`, `500ms`, `2m`, `1h` or plain seconds, for `--timeout` and `--progress-interval`."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = text, "s"
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            number, unit = text[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 500ms, 2m or 1h, got {text!r}"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"a duration must be 0 or more, got {text!r}")
    return seconds


def _count(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return number


def _summarise(program: ir.Program, broker: Any) -> None:
    counts = [(t.kafka_name, len(broker.messages(t.kafka_name))) for t in program.topics]
    dead = len(broker.messages(f"{program.app}-dlq"))
    summary = ", ".join(f"{name}: {count}" for name, count in counts)
    print(f"messages per topic: {summary}", file=sys.stderr)
    if dead:
        print(
            f"{dead} message(s) went to the dead-letter topic {program.app}-dlq; "
            f"see them with --output {program.app}-dlq=-",
            file=sys.stderr,
        )


def cmd_test(args: argparse.Namespace) -> int:
    from .testing import run_tests

    return run_tests(args.paths, args.k, args.junit_xml, args.update)


def _add_test_command(commands: Any) -> None:
    test = commands.add_parser(
        "test",
        help="run the test cases of programs (X.test.yaml beside X.sdl) with a virtual clock",
    )
    test.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="folders (searched for *.test.yaml), programs or test files (default: .)",
    )
    test.add_argument(
        "-k", metavar="PATTERN", help="only the cases whose name contains PATTERN (any case)"
    )
    test.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    test.add_argument(
        "--update",
        action="store_true",
        help="write what the program produced as the expectation of the selected cases",
    )
    test.set_defaults(run=cmd_test)


def cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrite files in the canonical layout (stdin to stdout without files); `--check`
    writes nothing and names the files that are not formatted."""
    from .diagnostics import DiagnosticError, render
    from .fmt import FormatError, format_source
    from .loader import MAX_SDL_BYTES, read_limited

    paths: list[Path] = []
    for given in map(Path, args.files):
        paths.extend(sorted(given.rglob("*.sdl")) if given.is_dir() else [given])
    failed = unformatted = 0
    targets: list[Path | None] = [*paths] or [None]  # None: stdin
    for path in targets:
        shown = "<stdin>" if path is None else str(path)
        try:
            data = sys.stdin.buffer.read() if path is None else read_limited(path, MAX_SDL_BYTES)
            text = data.decode("utf-8").removeprefix("\ufeff")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not valid UTF-8"
            print(f"streamc fmt: cannot read {shown}: {reason}", file=sys.stderr)
            failed += 1
            continue
        try:
            formatted = format_source(text, shown)
        except DiagnosticError as error:
            sys.stderr.write(render(error.diagnostics, {shown: text}))
            print(f"streamc fmt: {shown}: not formatted: it does not parse", file=sys.stderr)
            failed += 1
            continue
        except FormatError as error:
            where = f"{shown}:{error.line}:{error.col}" if error.line else shown
            print(f"streamc fmt: {where}: cannot format: {error.message}", file=sys.stderr)
            failed += 1
            continue
        if path is None and not args.check:
            sys.stdout.write(formatted)
        elif formatted != text:
            unformatted += 1
            if args.check:
                print(f"would reformat {shown}")
            else:
                assert path is not None
                with open(path, "w", encoding="utf-8", newline="") as file:
                    file.write(formatted)
                print(f"reformatted {shown}", file=sys.stderr)
    if failed:
        return EXIT_DIAGNOSTICS
    return EXIT_DIAGNOSTICS if args.check and unformatted else EXIT_OK


def cmd_lsp(args: argparse.Namespace) -> int:
    from .lsp import serve

    serve()
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import render

    sys.stdout.write(render(_load(args.file, args.allow_root), args.format))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamc", description=__doc__.splitlines()[0] if __doc__ else None)
    sources = _Parser(add_help=False)
    sources.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="DIR",
        help="also read hooks modules from inside DIR (by default only from inside the "
        "folder of the .sdl file)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser(
        "check", help="parse and type-check; print diagnostics", parents=[sources]
    )
    check.add_argument("files", nargs="+", metavar="FILE.sdl")
    check.set_defaults(run=cmd_check)

    build = commands.add_parser("build", help="write the worker package", parents=[sources])
    build.add_argument("file", metavar="FILE.sdl")
    build.add_argument("-o", "--output", metavar="DIR", help="default: build/<app>_worker")
    build.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR is not up to date"
    )
    build.set_defaults(run=cmd_build)

    run = commands.add_parser(
        "run",
        help="build, then run the worker on the in-memory broker until inputs are done",
        parents=[sources],
    )
    run.add_argument("file", metavar="FILE.sdl")
    run.add_argument(
        "--input", action="append", default=[], metavar="TOPIC=FILE.jsonl", required=True
    )
    run.add_argument("--output", action="append", default=[], metavar="TOPIC=FILE|-")
    run.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="TABLE=FILE|-",
        help="at the end, write the table's rows as JSON lines {key, value}, sorted by key",
    )
    run.add_argument(
        "--timestamps",
        action="store_true",
        help="include each message's timestamp (inputs without one get the current time)",
    )
    run.add_argument(
        "--no-close-windows",
        dest="close_windows",
        action="store_false",
        help="at the end of input, leave windows open (by default stream time moves past "
        "every window, so final results are emitted)",
    )
    run.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="stop after DURATION (30s, 2m...) and name the agents still busy; exit 1",
    )
    run.add_argument(
        "--max-records",
        type=_count,
        default=1_000_000,
        metavar="N",
        help="stop once the worker has written more than N records, e.g. in a cycle "
        "(default 1000000; 0: no limit)",
    )
    run.add_argument(
        "--progress-interval",
        type=_duration,
        metavar="DURATION",
        help="progress on stderr every DURATION (default: a bar on a terminal, "
        "else a line every 5s; 0: none)",
    )
    run.set_defaults(run=cmd_run)

    graph = commands.add_parser("graph", help="print the topology", parents=[sources])
    graph.add_argument("file", metavar="FILE.sdl")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.set_defaults(run=cmd_graph)
    _add_test_command(commands)

    fmt = commands.add_parser(
        "fmt", help="rewrite .sdl files in the one canonical layout, comments kept"
    )
    fmt.add_argument(
        "files", nargs="*", metavar="FILE",
        help=".sdl files or folders (searched for *.sdl); none: stdin to stdout",
    )  # fmt: skip
    fmt.add_argument(
        "--check", action="store_true",
        help="write nothing; name the files that are not formatted and exit 1 if any",
    )  # fmt: skip
    fmt.set_defaults(run=cmd_fmt)

    lsp = commands.add_parser("lsp", help="the language server, over stdin and stdout")
    lsp.set_defaults(run=cmd_lsp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except UsageError as error:
        print(f"streamc {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as failure:
        print(failure, file=sys.stderr)
        return EXIT_DIAGNOSTICS
    except OSError as error:  # the output folder or file cannot be written
        where = f": {error.filename}" if error.filename else ""
        print(f"streamc {args.command}: cannot write{where}: {error.strerror}", file=sys.stderr)
        return EXIT_DIAGNOSTICS
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the promise is: never a traceback
        print(
            f"streamc {args.command}: internal error: {type(error).__name__}: {error}\n"
            "This is a bug in streamc; set STREAMC_DEBUG=1 to see where it happened.",
            file=sys.stderr,
        )
        if os.environ.get("STREAMC_DEBUG"):
            raise
        return 3
    return status


if __name__ == "__main__":
    raise SystemExit(main())
