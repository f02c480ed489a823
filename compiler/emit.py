"""Code generation: `emit(program) -> {path: text}`, pure and deterministic.

The checked IR is first shaped into small view objects (every name already a safe identifier,
every literal already escaped, every pipeline already spelled as method calls), then rendered
by Jinja2 templates that hold nothing but loops and conditionals, then formatted in memory by
the pinned black. Nothing here touches the file system: the CLI writes the result.

This module renders and formats the package's files; the view model is in `emit_views`,
the shaping in `emit_shape` (with `emit_expr`, `emit_fused` and `emit_layout`).
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import PurePosixPath

import black
import jinja2

from . import ir
from .emit_layout import _uses_time, _window_call, import_lines
from .emit_shape import _Shaper
from .emit_views import PackageView
from .naming import Namer, doc_text, identifier, py_literal

RUNTIME_REQUIREMENT = "streamc-runtime>=0.1,<0.2"
BLACK_MODE = black.Mode(target_versions={black.mode.TargetVersion.PY311}, line_length=100)


# ---------------------------------------------------------------------------------------------
# Rendering


@functools.cache
def _environment() -> jinja2.Environment:
    templates = resources.files("streamc.templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text("utf-8")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


def _black(source: str) -> str:
    return black.format_str(source, mode=BLACK_MODE)


# Below this many files a process pool costs more than it saves.
_PARALLEL_FROM = 64


def format_python(sources: dict[PurePosixPath, str]) -> dict[PurePosixPath, str]:
    """Every source through the pinned black; large packages on every core.

    black costs a few milliseconds per agent module, which dominates building a program of
    hundreds of agents; the modules are independent, so they are formatted in parallel.
    Forked workers inherit the imported black, so they start in milliseconds.
    """
    paths = list(sources)
    workers = min(os.cpu_count() or 1, 8)
    if len(paths) < _PARALLEL_FROM or workers < 2 or "fork" not in mp.get_all_start_methods():
        return {path: _black(sources[path]) for path in paths}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        chunk = max(1, len(paths) // (workers * 4))
        formatted = pool.map(_black, [sources[p] for p in paths], chunksize=chunk)
        return dict(zip(paths, formatted, strict=True))


def shape(program: ir.Program) -> PackageView:
    shaper = _Shaper(program)
    package = identifier(program.app).lower() + "_worker"
    modules = Namer({"__init__"})
    agents = tuple(shaper.agent(a, modules.claim(a.name)) for a in program.agents)
    states = tuple(shaper.state(t)[0] for t in program.tables if t.source is None)
    records = (*(shaper.record(r) for r in program.records), *states)
    record_annotations = [f.annotation for r in records for f in r.fields]
    topic_annotations = [shaper.annotation(t) for topic in program.topics
                         for t in (topic.key_type, topic.value_type)]  # fmt: skip
    runtime_names = {_window_call(t.window).partition("(")[0] for t in program.tables
                     if t.window is not None}  # fmt: skip
    if _uses_time(topic_annotations):
        runtime_names.add("Time")
    return PackageView(
        app=py_literal(program.app),
        app_title=doc_text(program.app),
        package=package,
        distribution=package.replace("_", "-"),
        runtime_requirement=RUNTIME_REQUIREMENT,
        source_name=doc_text(program.source_name),
        records=records,
        topics=tuple(shaper.topic(t) for t in program.topics),
        topic_imports=import_lines(
            ".records",
            sorted(
                set().union(
                    *(
                        shaper.records_in(t.key_type) | shaper.records_in(t.value_type)
                        for t in program.topics
                    ),
                    *(
                        shaper.records_in(t.value_type)
                        | ({shaper.state_names[t.name]} if t.source is None else set())
                        for t in program.tables
                    ),
                )
            ),
        ),
        agents=agents,
        hook_modules=tuple(shaper.hook_modules[m.module] for m in program.hook_modules),
        dlq_topic=doc_text(f"{program.app}-dlq"),
        helper_modules=tuple(h.module for h in program.helper_modules),
        tables=tuple(shaper.table(t) for t in program.tables),
        record_runtime_imports=("Record", "Time") if _uses_time(record_annotations)
        else ("Record",),
        topic_runtime_imports=import_lines("streamc_runtime", sorted(runtime_names)),
        # JSON strings are TOML basic strings (a marker may hold quotes).
        requires=tuple(json.dumps(r) for r in program.requires),
        # PEP 508 allows neither newlines nor backquotes: safe inside Markdown code spans.
        requires_doc=program.requires,
    )


def emit(program: ir.Program) -> dict[PurePosixPath, str]:
    """Every file of the worker package, keyed by its path inside the output folder."""
    view = shape(program)
    pkg = PurePosixPath(view.package)
    python: dict[PurePosixPath, str] = {
        pkg / "__init__.py": _render("__init__.py.jinja", p=view),
        pkg / "__main__.py": _render("__main__.py.jinja", p=view),
        pkg / "records.py": _render("records.py.jinja", p=view),
        pkg / "app.py": _render("app.py.jinja", p=view),
        pkg / "topics.py": _render("topics.py.jinja", p=view),
        pkg / "agents" / "__init__.py": _render("agents__init__.py.jinja", p=view),
        pkg / "hooks" / "__init__.py": _render("hooks__init__.py.jinja", p=view),
    }
    for agent in view.agents:
        python[pkg / "agents" / f"{agent.module}.py"] = _render("agent.py.jinja", p=view, a=agent)
    files = format_python(python)
    files[PurePosixPath("pyproject.toml")] = _render("pyproject.toml.jinja", p=view)
    files[PurePosixPath("README.md")] = _render("README.md.jinja", p=view)
    files[PurePosixPath("Dockerfile")] = _render("Dockerfile.jinja", p=view)
    files[pkg / "py.typed"] = ""
    for module, original in zip(view.hook_modules, program.hook_modules, strict=True):
        # User code is shipped verbatim: it is theirs, not ours to reformat.
        files[pkg / "hooks" / f"{module}.py"] = original.text
    for helper in program.helper_modules:
        # Imported by name (`import helpers`), so outside the package's namespace.
        files[pkg / "hooks" / "_local" / f"{helper.module}.py"] = helper.text
    return dict(sorted(files.items()))
