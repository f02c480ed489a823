"""JSON Lines in and out of `streamc run`: read input files, format consumed messages.

An output line is `{"topic", "partition", "offset", "key", "value", "headers", "timestamp"}`,
with the value as JSON (a bytes value as its text) and headers as text. Bytes that have no such
form get their own field instead, so no two different messages print alike: a key that does not
decode as the topic's key type is `"key_base64"`; a value of a typed topic that is not JSON is
`"raw"` (its UTF-8 text); a value that is not UTF-8 is `"raw_base64"`; header values that are not
UTF-8 are in `"headers_base64"`. `"raw"` and `"raw_base64"` are also input forms, so a printed
value can be fed back unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from .memory import MemoryBroker
from .transport import Message

__all__ = ["Line", "Writer", "format", "lines", "read"]


class Line(dict[str, Any]):
    """One input object, remembering where it was read (`where`: "file:line")."""

    where: str = ""


class _NotJSON(ValueError):
    """Python's `json` accepts what JSON does not (NaN, numbers beyond a double)."""


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON (JSON numbers are finite)")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NotJSON(f"number {text} is out of range (larger than a double)")
    return number


def read(path: str | Path) -> list[Line]:
    """The objects of a JSONL file (blank lines skipped); `ValueError` names file and line."""
    out: list[Line] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_reject_constant, parse_float=_finite)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            except _NotJSON as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from None
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            entry = Line(obj)
            entry.where = f"{path}:{lineno}"
            out.append(entry)
    return out


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_field(data: bytes | None, key_type: Any) -> tuple[str, Any]:
    """`("key", decoded)`, or `("key_base64", ...)` for bytes that are not a key of the type."""
    if data is None:
        return "key", None
    try:
        if key_type in (None, bytes, str):
            return "key", data.decode("utf-8")
        if key_type is int:
            return "key", int(data)
        return "key", msgspec.json.decode(data)
    except ValueError:  # UnicodeDecodeError and msgspec.DecodeError are ValueErrors
        return "key_base64", _base64(data)


def _value_field(data: bytes | None, value_type: Any) -> tuple[str, Any]:
    """`("value", decoded)`; `("raw", text)` for a typed topic's value that is not JSON (e.g.
    a dead letter's bytes); `("raw_base64", ...)` for bytes that are not UTF-8."""
    if data is None:
        return "value", None
    if value_type is not None and value_type is not bytes:
        try:
            return "value", msgspec.json.decode(data)
        except msgspec.DecodeError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "raw_base64", _base64(data)
    return ("value" if value_type is None or value_type is bytes else "raw"), text


def _header_fields(headers: Any) -> dict[str, dict[str, str]]:
    """`{"headers": {...}}`, plus `"headers_base64"` for values that are not UTF-8."""
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for name, data in headers:
        try:
            text[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            binary[name] = _base64(data)
    return {"headers": text, "headers_base64": binary} if binary else {"headers": text}


def format(
    message: Message,
    topic_value_type: Any = bytes,
    *,
    key_type: Any = str,
    timestamp: bool = True,
) -> str:
    """One JSON line for `message`; `timestamp=False` leaves out the (wall-clock) timestamp."""
    obj: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    obj.update((_key_field(message.key, key_type), _value_field(message.value, topic_value_type)))
    obj.update(_header_fields(message.headers))
    if timestamp:
        obj["timestamp"] = message.timestamp
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def lines(
    broker: MemoryBroker,
    topic: str,
    value_type: Any = bytes,
    *,
    key_type: Any = str,
    timestamp: bool = True,
) -> Iterator[str]:
    """Every retained message of `topic`, partition by partition, as JSON lines."""
    for message in broker.messages(topic):
        yield format(message, value_type, key_type=key_type, timestamp=timestamp)


class Writer:
    """Writes the messages of chosen topics as JSON lines the moment they are produced.

    Set it as `MemoryBroker.on_produce`. Lines are flushed once per event-loop turn (not per
    line), so a run that is killed keeps everything produced until its last turn.

    An output that cannot be written (a closed pipe, a full disk) is dropped and its error
    kept in `error` (the first one, with `error_topic`) for the caller to report: raised from
    here it would fail the send of a record the broker has already stored, and the runtime
    would take it for a transport failure (retried: a copy per attempt, then a stop)."""

    def __init__(self, *, timestamp: bool = True) -> None:
        self.timestamp = timestamp
        self._targets: dict[str, list[tuple[IO[str], Any, Any]]] = {}
        self._dirty: set[IO[str]] = set()
        self._flush_scheduled = False
        self.error: OSError | None = None
        self.error_topic: str | None = None

    def add(self, topic: str, out: IO[str], value_type: Any = bytes, key_type: Any = str) -> None:
        self._targets.setdefault(topic, []).append((out, value_type, key_type))

    def __call__(self, message: Message) -> None:
        targets = self._targets.get(message.topic)
        if targets is None:
            return
        for out, value_type, key_type in targets:
            try:
                out.write(format(message, value_type, key_type=key_type, timestamp=self.timestamp))
                out.write("\n")
            except OSError as exc:
                self._failed(out, exc)
                continue
            self._dirty.add(out)
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._flush_scheduled = True
                loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for out in dirty:
            try:
                out.flush()
            except OSError as exc:
                self._failed(out, exc)

    def _failed(self, out: IO[str], exc: OSError) -> None:
        """Stop writing to `out`, and remember the first failure."""
        for topic, targets in list(self._targets.items()):
            if self.error is None and any(t[0] is out for t in targets):
                self.error, self.error_topic = exc, topic
            kept = [t for t in targets if t[0] is not out]
            if kept:
                self._targets[topic] = kept
            else:
                del self._targets[topic]
        self._dirty.discard(out)
