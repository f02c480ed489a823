"""The `streamc` command: check, build, run and graph `.sdl` programs.

This is the only part of the compiler that writes files, and it never writes outside the
folder it was given. Exit status: 0 success, 1 diagnostics or a failed check, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from . import ir

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake on the command line (exit 2)."""


class Failure(Exception):
    """The command ran and did not succeed (exit 1); the message says why."""


# ---------------------------------------------------------------------------------------------
# Shared steps


def _load(path: str) -> ir.Program:
    from .diagnostics import render
    from .loader import load

    result = load(Path(path))
    if result.diagnostics:
        sys.stderr.write(render(result.diagnostics, result.sources))
        errors = sum(1 for d in result.diagnostics if d.severity == "error")
        if result.program is None or errors:
            more = "" if result.complete else " (stopped there: the rest of the file was not read)"
            raise Failure(f"{path}: {errors} error{'s' if errors != 1 else ''}{more}")
    assert result.program is not None
    return result.program


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


def _stale_files(root: Path, files: Mapping[PurePosixPath, str]) -> list[str]:
    """Paths under `root` that differ from `files`: changed, missing, or left over."""
    stale = []
    for relative, text in files.items():
        target = root / relative
        if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
            stale.append(str(relative))
    package_dirs = {relative.parts[0] for relative in files if len(relative.parts) > 1}
    for package in sorted(package_dirs):
        for existing in sorted((root / package).rglob("*.py")):
            relative = PurePosixPath(existing.relative_to(root).as_posix())
            if relative not in files and "__pycache__" not in relative.parts:
                stale.append(f"{relative} (not generated)")
    return stale


def _write_tree(root: Path, files: Mapping[PurePosixPath, str]) -> None:
    targets = {relative: _inside(root, relative) for relative in files}
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        target = targets[relative]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != text.encode("utf-8"):
            target.write_bytes(text.encode("utf-8"))
    # Modules left from an earlier build of a renamed agent would still register themselves.
    for leftover in _stale_files(root, files):
        if leftover.endswith(" (not generated)"):
            (root / leftover.removesuffix(" (not generated)")).unlink()


def _package_name(files: Mapping[PurePosixPath, str]) -> str:
    return next(p.parts[0] for p in files if p.name == "__main__.py")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            _load(path)
        except Failure as failure:
            print(failure, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return EXIT_DIAGNOSTICS if failed else EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    program = _load(args.file)
    files = _emit(program)
    out = Path(args.output) if args.output else Path("build") / _package_name(files)
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
    print(f"wrote {out} ({len(files)} files)")
    return EXIT_OK


def _topic_option(program: ir.Program, option: str, spec: str) -> tuple[ir.Topic, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"{option} takes TOPIC=FILE, got {spec!r}")
    for topic in program.topics:
        if name in (topic.name, topic.kafka_name):
            return topic, path
    if name == f"{program.app}-dlq":
        dlq = ir.Topic(name, name, ir.BYTES, ir.BYTES, 1, "declared")
        return dlq, path
    known = [t.name for t in program.topics] + [f"{program.app}-dlq"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; topics: {', '.join(known)}"
    raise UsageError(f"{option}: no topic '{name}'{hint}")


def cmd_run(args: argparse.Namespace) -> int:
    from streamc_runtime import jsonl
    from streamc_runtime.local import LocalRunError, run_local

    program = _load(args.file)
    inputs: dict[str, list[dict[str, Any]]] = {}
    for spec in args.input:
        topic, path = _topic_option(program, "--input", spec)
        try:
            inputs.setdefault(topic.kafka_name, []).extend(jsonl.read(path))
        except OSError as error:
            raise Failure(f"--input {spec}: cannot read {path}: {error.strerror}") from None
        except ValueError as error:
            raise Failure(f"--input {spec}: {error}") from None
    outputs = [_topic_option(program, "--output", spec) for spec in args.output]

    files = _emit(program)
    with tempfile.TemporaryDirectory(prefix="streamc-run-") as workdir:
        _write_tree(Path(workdir), files)
        package = _package_name(files)
        sys.path.insert(0, workdir)
        try:
            app = importlib.import_module(f"{package}.app").app
            importlib.import_module(f"{package}.agents")
            broker = asyncio.run(run_local(app, inputs))
        except ValueError as error:  # an input that does not fit its topic
            raise Failure(f"streamc run: {error}") from None
        except LocalRunError as error:
            cause = error.__cause__ or error
            raise Failure(
                f"streamc run: the worker failed: {type(cause).__name__}: {cause}"
            ) from None
        finally:
            sys.path.remove(workdir)
            for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
                del sys.modules[name]
        for topic, destination in outputs:
            declared = app.topics[topic.kafka_name]
            lines = jsonl.lines(
                broker,
                topic.kafka_name,
                declared.value_type,
                key_type=declared.key_type,
                timestamp=args.timestamps,
            )
            text = "".join(line + "\n" for line in lines)
            if destination == "-":
                sys.stdout.write(text)
            else:
                Path(destination).write_text(text, encoding="utf-8")
        _summarise(program, broker)
    return EXIT_OK


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


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import render

    sys.stdout.write(render(_load(args.file), args.format))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamc", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser("check", help="parse and type-check; print diagnostics")
    check.add_argument("files", nargs="+", metavar="FILE.sdl")
    check.set_defaults(run=cmd_check)

    build = commands.add_parser("build", help="write the worker package")
    build.add_argument("file", metavar="FILE.sdl")
    build.add_argument("-o", "--output", metavar="DIR", help="default: build/<app>_worker")
    build.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR is not up to date"
    )
    build.set_defaults(run=cmd_build)

    run = commands.add_parser(
        "run", help="build, then run the worker on the in-memory broker until inputs are done"
    )
    run.add_argument("file", metavar="FILE.sdl")
    run.add_argument(
        "--input", action="append", default=[], metavar="TOPIC=FILE.jsonl", required=True
    )
    run.add_argument("--output", action="append", default=[], metavar="TOPIC=FILE|-")
    run.add_argument(
        "--timestamps",
        action="store_true",
        help="include each message's timestamp (output then differs from run to run)",
    )
    run.set_defaults(run=cmd_run)

    graph = commands.add_parser("graph", help="print the topology")
    graph.add_argument("file", metavar="FILE.sdl")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.set_defaults(run=cmd_graph)
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
