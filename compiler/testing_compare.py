"""`streamc test`'s comparisons: what the topics, tables and dead-letter topic hold once a case
has run, against what the case expects (docs/testing.md gives the rules).

`_compare` gives the case's `Outcome`: every mismatch as a message showing the expected and the
actual record, and what the program produced, which `--update` writes back into the file.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field
from typing import Any

import msgspec
import yaml

from . import ir
from .testfile import Case, ExpectedRecord, ExpectedRow, TableExpectation
from .testfile_update import Produced


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
