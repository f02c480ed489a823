"""JSON Lines in and out of `streamc run`: read input files, format consumed messages.

An output line is `{"topic", "partition", "offset", "key", "value", "headers", "timestamp"}`,
with the value as JSON (a bytes value as its text) and headers as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from .memory import MemoryBroker
from .transport import Message

__all__ = ["format", "lines", "read"]


def read(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped); `ValueError` names file and line."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            out.append(obj)
    return out


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _value(data: bytes | None, value_type: Any) -> Any:
    if data is None:
        return None
    if value_type is None or value_type is bytes:
        return _text(data)
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return _text(data)  # not JSON (e.g. a dead letter's raw bytes): show the text


def _key(data: bytes | None, key_type: Any) -> Any:
    if data is None:
        return None
    if key_type in (None, bytes, str):
        return _text(data)
    if key_type is int:
        try:
            return int(data)
        except ValueError:
            return _text(data)
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return _text(data)


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
        "key": _key(message.key, key_type),
        "value": _value(message.value, topic_value_type),
        "headers": {k: _text(v) for k, v in message.headers},
    }
    if timestamp:
        obj["timestamp"] = message.timestamp
    return json.dumps(obj, ensure_ascii=False)


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
