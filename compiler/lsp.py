"""`streamc lsp`: the language server, over stdio (pygls).

Every feature reads one `Analysis` of a document: the same `loader.load_text` that
`streamc check` runs (parse, check, hook modules), asked for the checker's facts: the types
around each operation and what each name resolves to. The server keeps no second parser or
checker; what it adds is where things are (`Index`) and how to say them in LSP's terms.

Features, one small handler each, in the manner of pygls' examples: diagnostics as you type
(for the .sdl, its hook modules and its test file `X.test.yaml`), hover, inlay hints with the
element type after each step, go to definition (into the hooks module for hooks), completion,
document symbols, rename within the file, quick fixes from did-you-mean hints and formatting.

Declarations and operations the language gains later need little here: symbols, definitions
and the name index work from any declaration with a `name`, completion lists the parser's
keywords, and hover and inlay hints read the checker's facts whatever the operation.
"""

from __future__ import annotations

import ast as pyast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace.position_codec import PositionCodec

from . import ast, ir
from .checker import BUILTIN_TYPE_NAMES, Facts, hooks_display_path
from .diagnostics import Diagnostic, DiagnosticError
from .loader import LoadResult, load_text
from .parser import DECL_KEYWORDS, OP_KEYWORDS

SOURCE = "streamc"
_DID_YOU_MEAN = re.compile(r"did you mean (?:the field |the hook )?'([^']+)'\?")
_WORD = re.compile(r"`?[A-Za-z_][A-Za-z0-9_]*`?")


# ---------------------------------------------------------------------------------------------
# What the features read: a checked document and an index of its names


@dataclass(frozen=True)
class Named:
    """A name as written: a definition or a resolved reference."""

    kind: str  # "record", "field", "topic", "hook", "agent", or a newer declaration's kind
    key: tuple[str, ...]  # ("Order",), ("Order", "amount")
    start: int
    end: int
    definition: bool


@dataclass
class Index:
    names: list[Named] = field(default_factory=list)
    definitions: dict[tuple[str, tuple[str, ...]], Named] = field(default_factory=dict)
    records: dict[str, ast.RecordDecl] = field(default_factory=dict)
    hooks: dict[str, tuple[ast.HookSig, str]] = field(default_factory=dict)  # sig, module path
    decls: dict[str, tuple[str, Any]] = field(default_factory=dict)  # any name: kind, decl

    def at(self, offset: int) -> Named | None:
        for named in self.names:
            if named.start <= offset <= named.end:
                return named
        return None

    def occurrences(self, kind: str, key: tuple[str, ...]) -> list[Named]:
        return [n for n in self.names if n.kind == kind and n.key == key]


def decl_kind(decl: Any) -> str:
    """`record` for a RecordDecl, `table` for a TableDecl: the keyword that declares it."""
    return type(decl).__name__.removesuffix("Decl").lower()


def build_index(module: ast.Module, facts: Facts | None) -> Index:
    index = Index()

    def define(kind: str, key: tuple[str, ...], name: ast.Name) -> None:
        named = Named(kind, key, name.span.start, name.span.end, True)
        index.names.append(named)
        index.definitions.setdefault((kind, key), named)

    for decl in module.decls:
        if isinstance(decl, ast.HooksDecl):
            for sig in decl.hooks:
                define("hook", (sig.name.text,), sig.name)
                index.hooks.setdefault(sig.name.text, (sig, decl.path.value))
            continue
        name = getattr(decl, "name", None)
        if not isinstance(name, ast.Name):
            continue  # `app`
        kind = decl_kind(decl)
        define(kind, (name.text,), name)
        index.decls.setdefault(name.text, (kind, decl))
        if isinstance(decl, ast.RecordDecl):
            index.records.setdefault(name.text, decl)
            for f in decl.fields:
                define("field", (name.text, f.name.text), f.name)
    for span, kind, key in facts.refs if facts else ():
        index.names.append(Named(kind, key, span.start, span.end, False))
    index.names.sort(key=lambda n: n.start)
    return index


@dataclass
class Analysis:
    """One document checked as `streamc check` would, with what the features need."""

    path: Path
    text: str
    result: LoadResult
    index: Index | None
    test_diagnostics: list[Diagnostic]
    test_path: Path | None
    test_text: str | None

    @property
    def module(self) -> ast.Module | None:
        return self.result.module

    @property
    def facts(self) -> Facts | None:
        return self.result.facts

    def op_at(self, offset: int) -> tuple[ast.AgentDecl, int, Any] | None:
        """The agent and operation (with its index) whose text holds `offset`."""
        for decl in self.module.decls if self.module else ():
            if isinstance(decl, ast.AgentDecl) and decl.span.start <= offset <= decl.span.end:
                for i, op in enumerate(decl.ops):
                    if op.span.start <= offset <= op.span.end:
                        return decl, i, op
        return None


def analyse(path: Path, text: str, open_texts: dict[Path, str] | None = None) -> Analysis:
    """Check `text` as the contents of `path`; `open_texts` are other files as the editor
    holds them (hooks modules, the test file), by resolved path."""
    from .testfile import check_test_file, test_path_for

    open_texts = open_texts or {}
    result = load_text(path, text, facts=True, hook_texts=open_texts)
    index = build_index(result.module, result.facts) if result.module else None
    test_path = Path(test_path_for(str(path)))
    test_text = open_texts.get(test_path.resolve())
    if test_text is None and test_path.is_file():
        try:
            test_text = test_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            test_text = None
    tests: list[Diagnostic] = []
    if test_text is not None and result.program is not None:
        tests = check_test_file(test_text, str(test_path), result.program)[1]
    return Analysis(path, text, result, index, tests, test_path if test_text else None,
                    test_text)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Positions: spans count code points from 1; LSP counts the client's code units from 0


def _lines(text: str) -> list[str]:
    return text.split("\n")


def offset_at(text: str, line: int, character: int, codec: PositionCodec) -> int:
    lines = _lines(text)
    pos = codec.position_from_client_units(lines, lsp.Position(line, character))
    return sum(len(x) + 1 for x in lines[: pos.line]) + pos.character


def _position(text: str, offset: int, codec: PositionCodec) -> lsp.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return codec.position_to_client_units(_lines(text), lsp.Position(line, col))


def range_of(text: str, start: int, end: int, codec: PositionCodec) -> lsp.Range:
    return lsp.Range(_position(text, start, codec), _position(text, end, codec))


def diagnostic_range(d: Diagnostic, text: str | None, codec: PositionCodec) -> lsp.Range:
    if d.line <= 0:
        return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    lines = _lines(text or "")
    start = lsp.Position(d.line - 1, max(d.col - 1, 0))
    end = lsp.Position(d.end_line - 1, max(d.end_col - 1, 0))
    if (d.end_line, d.end_col) <= (d.line, d.col):
        end = lsp.Position(start.line, start.character + 1)
    return lsp.Range(codec.position_to_client_units(lines, start),
                     codec.position_to_client_units(lines, end))  # fmt: skip


def to_lsp(d: Diagnostic, text: str | None, codec: PositionCodec) -> lsp.Diagnostic:
    message = d.message + "".join(f"\nhint: {h}" for h in d.hints)
    related = [
        lsp.DiagnosticRelatedInformation(
            lsp.Location(Path(n.file).resolve().as_uri(),
                         diagnostic_range(Diagnostic(*n[:5], "note", "", n.message), text,
                                          codec)),
            n.message)
        for n in d.notes
    ]  # fmt: skip
    severity = lsp.DiagnosticSeverity.Error if d.severity == "error" else \
        lsp.DiagnosticSeverity.Warning  # fmt: skip
    return lsp.Diagnostic(
        range=diagnostic_range(d, text, codec), message=message, severity=severity,
        code=d.code, source=SOURCE, related_information=related or None,
        data={"hints": list(d.hints)},
    )  # fmt: skip


def diagnostics_by_file(a: Analysis) -> dict[Path, tuple[list[Diagnostic], str | None]]:
    """Every diagnostic of the document, its hook modules and its test file, by file."""
    files: dict[Path, tuple[list[Diagnostic], str | None]] = {}
    shown = {name: Path(name) for name in a.result.sources}
    for d in a.result.diagnostics:
        path = shown.get(d.file, Path(d.file))
        files.setdefault(path.resolve(), ([], a.result.sources.get(d.file)))[0].append(d)
    if a.test_path is not None:
        files.setdefault(a.test_path.resolve(), ([], a.test_text))[0].extend(a.test_diagnostics)
    return files


# ---------------------------------------------------------------------------------------------
# Features, pure: from an analysis and an offset to what the editor shows


def _show(t: ir.Type | None) -> str:
    return "unknown (see the errors)" if t is None else str(t)


def _slice(a: Analysis, node: Any) -> str:
    return " ".join(a.text[node.span.start : node.span.end].split())


def hover_text(a: Analysis, offset: int) -> str | None:
    if a.index is None:
        return None
    named = a.index.at(offset)
    if named is not None:
        return _name_hover(a, named)
    found = a.op_at(offset)
    if found is not None and a.facts is not None:
        _, _, op = found
        types = a.facts.ops.get(op.span)
        if types is not None:
            return (f"```sdl\n{_slice(a, op)}\n```\n"
                    f"in: {_show(types.elem_in)} keyed by {_show(types.key_in)}  \n"
                    f"out: {_show(types.elem_out)} keyed by {_show(types.key_out)}")  # fmt: skip
    return None


def _name_hover(a: Analysis, named: Named) -> str | None:
    assert a.index is not None
    name = named.key[-1]
    if named.kind == "record" and name in a.index.records:
        decl = a.index.records[name]
        fields = "".join(f"    {_slice(a, f)}\n" for f in decl.fields)
        return f"```sdl\nrecord {name} {{\n{fields}}}\n```"
    if named.kind == "field" and named.key[0] in a.index.records:
        for f in a.index.records[named.key[0]].fields:
            if f.name.text == name:
                return f"```sdl\n{named.key[0]}.{_slice(a, f)}\n```\nfield of record {named.key[0]}"
    if named.kind == "topic" and a.facts is not None and name in a.facts.topics:
        t = a.facts.topics[name]
        return (f"```sdl\ntopic {name}: {t.value_type} key {t.key_type}\n```\n"
                f"partitions: {t.partitions}  \nKafka topic: `{t.kafka_name}`")  # fmt: skip
    if named.kind == "hook" and name in a.index.hooks:
        sig, module = a.index.hooks[name]
        return f"```sdl\n{_slice(a, sig)}\n```\nhook from `{module}`"
    if name in a.index.decls:
        kind, decl = a.index.decls[name]
        if isinstance(decl, ast.AgentDecl):
            return f"```sdl\n{_slice(a, decl)}\n```"
        return f"```sdl\n{_slice(a, decl)}\n```\n{kind}"
    return None


def inlay_hints(a: Analysis) -> Iterator[tuple[int, str]]:
    """(offset, label): the element type after each step of each pipeline."""
    if a.module is None or a.facts is None:
        return
    for decl in a.module.decls:
        if isinstance(decl, ast.AgentDecl):
            for op in decl.ops:
                types = a.facts.ops.get(op.span)
                if types is not None and types.elem_out is not None:
                    yield op.span.end, f": {types.elem_out}"


def definition(a: Analysis, offset: int) -> tuple[Path, int, int] | tuple[Path, int] | None:
    """Where the name at `offset` is defined: a span in the document, or a hook function's
    line (from 1) in its module."""
    if a.index is None:
        return None
    named = a.index.at(offset)
    if named is None:
        word = _word_at(a.text, offset)
        if word is None or word not in a.index.decls:  # a declaration the checker does not
            return None  # resolve yet (a table, say): found by its name
        decl = a.index.decls[word][1]
        return a.path, decl.name.span.start, decl.name.span.end
    if named.kind == "hook" and named.key[0] in a.index.hooks:
        found = _hook_def(a, named.key[0])
        if found is not None:
            return found
    target = a.index.definitions.get((named.kind, named.key))
    return None if target is None else (a.path, target.start, target.end)


def _hook_def(a: Analysis, name: str) -> tuple[Path, int] | None:
    assert a.index is not None
    _, module = a.index.hooks[name]
    shown = hooks_display_path(str(a.path), module)
    text = a.result.sources.get(shown)
    if text is None:
        return None
    try:
        tree = pyast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, pyast.FunctionDef | pyast.AsyncFunctionDef) and node.name == name:
            return Path(shown), node.lineno
    return None


def _word_at(text: str, offset: int) -> str | None:
    for m in _WORD.finditer(text, max(0, offset - 100), offset + 100):
        if m.start() <= offset <= m.end():
            return m.group(0).strip("`")
    return None


def symbols(a: Analysis) -> list[lsp.DocumentSymbol]:
    if a.module is None:
        return []
    codec = PositionCodec()
    kinds = {"record": lsp.SymbolKind.Struct, "topic": lsp.SymbolKind.Event,
             "agent": lsp.SymbolKind.Function, "hooks": lsp.SymbolKind.Module,
             "app": lsp.SymbolKind.Namespace}  # fmt: skip

    def symbol(name: str, kind: lsp.SymbolKind, node: Any, selection: Any,
               children: list[lsp.DocumentSymbol] | None = None) -> lsp.DocumentSymbol:  # fmt: skip
        return lsp.DocumentSymbol(
            name=name, kind=kind, range=range_of(a.text, node.span.start, node.span.end, codec),
            selection_range=range_of(a.text, selection.span.start, selection.span.end, codec),
            children=children,
        )  # fmt: skip

    out = []
    for decl in a.module.decls:
        kind = decl_kind(decl)
        if isinstance(decl, ast.HooksDecl):
            hooks = [symbol(s.name.text, lsp.SymbolKind.Function, s, s.name) for s in decl.hooks]
            out.append(symbol(f"hooks {decl.path.value}", kinds["hooks"], decl, decl.path, hooks))
        elif isinstance(decl, ast.AppDecl):
            out.append(symbol(f"app {decl.name.text}", kinds["app"], decl, decl.name))
        elif isinstance(decl, ast.RequiresDecl):
            out.append(symbol("requires", lsp.SymbolKind.Package, decl, decl))
        elif isinstance(getattr(decl, "name", None), ast.Name):
            name: ast.Name = decl.name
            children = None
            if isinstance(decl, ast.RecordDecl):
                children = [symbol(f.name.text, lsp.SymbolKind.Field, f, f.name)
                            for f in decl.fields]  # fmt: skip
            out.append(symbol(name.text, kinds.get(kind, lsp.SymbolKind.Object), decl, name,
                              children))  # fmt: skip
    return out


RENAMEABLE = ("record", "topic", "agent", "field")


def rename_spans(a: Analysis, offset: int) -> tuple[Named, list[Named]] | None:
    """The name at `offset` and every place in the file that names the same thing."""
    if a.index is None:
        return None
    named = a.index.at(offset)
    if named is None or named.kind not in RENAMEABLE:
        return None
    return named, a.index.occurrences(named.kind, named.key)


def quick_fixes(d: lsp.Diagnostic) -> list[str]:
    """The replacements a did-you-mean hint offers for a diagnostic's range."""
    hints = (d.data or {}).get("hints", []) if isinstance(d.data, dict) else []
    return [m.group(1) for h in hints if (m := _DID_YOU_MEAN.fullmatch(h))]


# ---- completion

_AFTER_TOPIC = {"from", "&", "through", "to", "echo"}
_AFTER_HOOK = {"process", "filter", "sink"}
_AFTER_TYPE = {":", "key", "->", "[", "("}


def completions(a: Analysis, good: Analysis | None, offset: int) -> list[tuple[str, str]]:
    """(label, kind) for what may be written at `offset`. `good` is the last analysis of the
    document that parsed: while a line is half typed, names and types come from it."""
    src = a if a.index is not None else good
    before = a.text[:offset]
    m = re.search(r"`?[A-Za-z_][A-Za-z0-9_]*$", before)
    stem = before[: m.start()] if m else before
    prev_words = re.findall(r"->|[|&:,.\[({=]|`?[A-Za-z_][A-Za-z0-9_]*`?|\S", stem)
    prev = prev_words[-1] if prev_words else ""
    records = sorted(src.index.records) if src and src.index else []
    topics = sorted(src.facts.topics) if src and src.facts else []
    hooks = sorted(src.index.hooks) if src and src.index else []
    if prev == "|":
        return [(k, "keyword") for k in OP_KEYWORDS]
    op_word, agent, step = _current_op(a.text, offset)
    if prev == "." or op_word in ("where", "group_by") or (op_word and op_word not in OP_KEYWORDS
                                                          and prev in ("{", ",", "(", "=")):
        fields = _fields_at(src, agent, step, stem)  # fmt: skip
        extra = hooks if op_word == "group_by" and prev != "." else []
        return [(f, "field") for f in fields] + [(h, "function") for h in extra]
    if prev == "join":
        return [("stream", "keyword")]  # or a table's name
    if prev in _AFTER_TOPIC or (prev == "," and op_word == "echo") or prev_words[-2:] == [
            "join", "stream"]:  # fmt: skip
        return [(t, "topic") for t in topics]
    if prev in _AFTER_HOOK or (prev == "," and op_word == "process"):
        return [(h, "function") for h in hooks]
    if prev in _AFTER_TYPE or (prev == "," and _inside_brackets(stem)):
        return [(t, "type") for t in (*BUILTIN_TYPE_NAMES, *records)]
    if not stem.strip() or (re.search(r"(^|\n)\s*$", stem) and _at_top_level(stem)):
        return [(k, "keyword") for k in DECL_KEYWORDS]
    return []


def _inside_brackets(stem: str) -> bool:
    return stem.count("[") > stem.count("]") or stem.count("(") > stem.count(")")


def _at_top_level(stem: str) -> bool:
    return stem.count("{") == stem.count("}") and not re.search(r"\|[^|]*$|=\s*$", stem[-200:])


def _current_op(text: str, offset: int) -> tuple[str | None, str | None, int]:
    """The keyword of the operation being written at `offset`, its agent's name and the
    operation's place in the pipeline (from the text: it may not parse yet). A new agent,
    not in the last text that parsed, is named by its source topic: `from orders`."""
    starts = list(re.finditer(r"^[ \t]*agent[ \t]+`?([A-Za-z_][A-Za-z0-9_]*)", text[:offset],
                              re.M))  # fmt: skip
    if not starts:
        return None, None, -1
    agent = starts[-1]
    body = text[agent.end() : offset]
    if re.search(r"^[ \t]*(?:" + "|".join(DECL_KEYWORDS) + r")\b", body, re.M):
        return None, None, -1
    steps = body.split("|")
    if len(steps) < 2:
        return None, agent.group(1), -1
    word = re.match(r"\s*([A-Za-z_]+)", steps[-1])
    source = re.search(r"\bfrom\s+`?([A-Za-z_][A-Za-z0-9_]*)", steps[0])
    name = agent.group(1) + (f" from {source.group(1)}" if source else "")
    return (word.group(1) if word else None), name, len(steps) - 2


def _fields_at(src: Analysis | None, agent: str | None, step: int, stem: str) -> list[str]:
    """The fields of the record flowing into step `step` of `agent`, or of the record the
    field path before the cursor (`customer.`) leads to."""
    if src is None or src.module is None or src.index is None or src.facts is None:
        return []
    elem: ir.Type | None = None
    agent, _, source = (agent or "").partition(" from ")
    if step == 0 and source in src.facts.topics:
        elem = src.facts.topics[source].value_type
    for decl in src.module.decls:
        if isinstance(decl, ast.AgentDecl) and decl.name.text == agent and step >= 0:
            ops = decl.ops
            if step < len(ops):
                types = src.facts.ops.get(ops[step].span)
                elem = types.elem_in if types else None
            elif ops:  # a step not in the last good text: after the last one
                types = src.facts.ops.get(ops[-1].span)
                elem = types.elem_out if types else None
            else:
                elem = _source_type(src, decl)
    record = elem.name if isinstance(elem, ir.RecordType) else None
    path = re.search(r"((?:`?[A-Za-z_][A-Za-z0-9_]*`?\.)+)$", stem)
    for part in (path.group(1).split(".")[:-1] if path else []):
        decl_r = src.index.records.get(record or "")
        nxt = next((f for f in decl_r.fields if f.name.text == part.strip("`")), None) \
            if decl_r else None  # fmt: skip
        record = nxt.type.name.text if nxt and isinstance(nxt.type, ast.NamedType) else None
    decl_r = src.index.records.get(record or "")
    return [f.name.text for f in decl_r.fields] if decl_r else []


def _source_type(src: Analysis, decl: ast.AgentDecl) -> ir.Type | None:
    assert src.facts is not None
    first = src.facts.topics.get(decl.source.topics[0].text)
    return first.value_type if first else None


# ---------------------------------------------------------------------------------------------
# The server: LSP messages to and from the features


class StreamcServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("streamc", "0.1.0", text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.analyses: dict[Path, Analysis] = {}  # by .sdl path, the latest
        self.good: dict[Path, Analysis] = {}  # by .sdl path, the latest that parsed
        self.published: dict[Path, set[Path]] = {}  # by .sdl path: files given diagnostics

    def open_texts(self) -> dict[Path, str]:
        out = {}
        for doc in list(self.workspace.text_documents.values()):
            out[Path(to_fs_path(doc.uri) or doc.uri).resolve()] = doc.source
        return out

    def refresh(self, uri: str) -> None:
        """Check every program the changed document belongs to, and publish."""
        path = Path(to_fs_path(uri) or uri)
        name = path.name
        if name.endswith(".test.yaml"):
            programs = [path.with_name(name.removesuffix(".test.yaml") + ".sdl")]
        elif name.endswith(".sdl"):
            programs = [path]
        else:  # a hooks module: every open program may use it
            programs = list(self.analyses)
        texts = self.open_texts()
        for program in programs:
            text = texts.get(program.resolve())
            if text is None:
                if not program.is_file():
                    continue
                text = program.read_text(encoding="utf-8", errors="replace")
            self.publish(program, analyse(program, text, texts))

    def publish(self, path: Path, a: Analysis) -> None:
        self.analyses[path] = a
        if a.index is not None:
            self.good[path] = a
        codec = self.workspace.position_codec
        files = diagnostics_by_file(a)
        files.setdefault(path.resolve(), ([], a.text))
        for file, (found, text) in files.items():
            shown = [to_lsp(d, text, codec) for d in found]
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri=file.as_uri(), diagnostics=shown))
        for stale in self.published.get(path, set()) - set(files):
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri=stale.as_uri(), diagnostics=[]))  # fmt: skip
        self.published[path] = set(files)

    def analysis(self, uri: str) -> Analysis | None:
        path = Path(to_fs_path(uri) or uri)
        if path not in self.analyses and path.name.endswith(".sdl"):
            self.refresh(uri)
        return self.analyses.get(path)

    def offset(self, a: Analysis, position: lsp.Position) -> int:
        return offset_at(a.text, position.line, position.character, self.workspace.position_codec)

    def range(self, a: Analysis, start: int, end: int) -> lsp.Range:
        return range_of(a.text, start, end, self.workspace.position_codec)


server = StreamcServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: StreamcServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.refresh(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: StreamcServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.refresh(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: StreamcServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.refresh(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: StreamcServer, params: lsp.HoverParams) -> lsp.Hover | None:
    a = ls.analysis(params.text_document.uri)
    text = None if a is None else hover_text(a, ls.offset(a, params.position))
    if text is None:
        return None
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text))


@server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
def inlay_hint(ls: StreamcServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
    a = ls.analysis(params.text_document.uri)
    if a is None:
        return []
    lo, hi = ls.offset(a, params.range.start), ls.offset(a, params.range.end)
    return [lsp.InlayHint(position=ls.range(a, offset, offset).start, label=label,
                          kind=lsp.InlayHintKind.Type, padding_left=True)
            for offset, label in inlay_hints(a) if lo <= offset <= hi]  # fmt: skip


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def goto_definition(ls: StreamcServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    a = ls.analysis(params.text_document.uri)
    found = None if a is None else definition(a, ls.offset(a, params.position))
    if a is None or found is None:
        return None
    if len(found) == 2:  # a line of a hooks module
        line = found[1] - 1
        where = lsp.Range(lsp.Position(line, 0), lsp.Position(line, 0))
        return lsp.Location(found[0].resolve().as_uri(), where)
    return lsp.Location(params.text_document.uri, ls.range(a, found[1], found[2]))


_KINDS = {"keyword": lsp.CompletionItemKind.Keyword, "field": lsp.CompletionItemKind.Field,
          "topic": lsp.CompletionItemKind.Event, "function": lsp.CompletionItemKind.Function,
          "type": lsp.CompletionItemKind.Class}  # fmt: skip


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=["|", ".", " "]))  # fmt: skip
def completion(ls: StreamcServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    a = ls.analysis(params.text_document.uri)
    if a is None:
        return lsp.CompletionList(is_incomplete=False, items=[])
    found = completions(a, ls.good.get(a.path), ls.offset(a, params.position))
    return lsp.CompletionList(is_incomplete=False,
                              items=[lsp.CompletionItem(label, kind=_KINDS[kind])
                                     for label, kind in found])  # fmt: skip


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbol(ls: StreamcServer,
                    params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:  # fmt: skip
    a = ls.analysis(params.text_document.uri)
    if a is None:
        return []
    codec = ls.workspace.position_codec
    lines = _lines(a.text)

    def convert(s: lsp.DocumentSymbol) -> lsp.DocumentSymbol:  # code points to client units
        def r(x: lsp.Range) -> lsp.Range:
            return lsp.Range(codec.position_to_client_units(lines, x.start),
                             codec.position_to_client_units(lines, x.end))  # fmt: skip
        children = [convert(c) for c in s.children or []] or None
        return lsp.DocumentSymbol(name=s.name, kind=s.kind, range=r(s.range),
                                  selection_range=r(s.selection_range), children=children)

    return [convert(s) for s in symbols(a)]


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
def prepare_rename(ls: StreamcServer, params: lsp.PrepareRenameParams) -> lsp.Range | None:
    a = ls.analysis(params.text_document.uri)
    found = None if a is None else rename_spans(a, ls.offset(a, params.position))
    if a is None or found is None:
        return None
    return ls.range(a, found[0].start, found[0].end)


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
def rename(ls: StreamcServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
    a = ls.analysis(params.text_document.uri)
    found = None if a is None else rename_spans(a, ls.offset(a, params.position))
    if a is None or found is None:
        return None
    new = params.new_name.strip("`")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new):
        raise ValueError(f"'{params.new_name}' is not a name")
    if new in _KEYWORDS:
        new = f"`{new}`"  # a keyword is a name only in backquotes
    edits = [lsp.TextEdit(ls.range(a, n.start, n.end), new) for n in found[1]]
    return lsp.WorkspaceEdit(changes={params.text_document.uri: edits})


_KEYWORDS = frozenset({*DECL_KEYWORDS, *OP_KEYWORDS, "from", "key", "partitions", "name",
                       "within", "and", "or", "not", "true", "false", "null"})  # fmt: skip


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
def code_action(ls: StreamcServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    actions = []
    for d in params.context.diagnostics:
        for replacement in quick_fixes(d):
            edit = lsp.WorkspaceEdit(changes={params.text_document.uri: [
                lsp.TextEdit(d.range, replacement)]})  # fmt: skip
            actions.append(lsp.CodeAction(title=f"Change to '{replacement}'",
                                          kind=lsp.CodeActionKind.QuickFix, diagnostics=[d],
                                          edit=edit, is_preferred=True))  # fmt: skip
    return actions


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: StreamcServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
    from .fmt import FormatError, format_source

    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        formatted = format_source(doc.source, doc.path)
    except (DiagnosticError, FormatError):
        return []  # the diagnostics, or `streamc fmt`, say why
    if formatted == doc.source:
        return []
    lines = _lines(doc.source)
    end = ls.workspace.position_codec.position_to_client_units(
        lines, lsp.Position(len(lines) - 1, len(lines[-1])))  # fmt: skip
    return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), formatted)]


def serve() -> None:
    """Speak LSP on stdin/stdout until the client says exit."""
    server.start_io()
