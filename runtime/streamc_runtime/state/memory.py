"""The in-memory store: a dict of decoded states per table partition (the default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MemoryStore"]


class MemoryStore:
    """Lost with the worker: a restore always replays the whole changelog partition."""

    __slots__ = ("_decode", "_raw", "_states", "positions")

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        self._states: dict[bytes, Any] = {}
        # During a restore: the last state bytes per key, decoded once at the end (a key
        # rewritten a thousand times in the changelog is decoded once, not a thousand times).
        self._raw: dict[bytes, bytes | None] = {}
        self.positions: dict[str, int] = {}

    def get(self, key: bytes) -> Any | None:
        return self._states.get(key)

    def put(self, key: bytes, state: Any, data: bytes) -> None:
        self._states[key] = state

    def items(self) -> Iterator[tuple[bytes, Any]]:
        return iter(list(self._states.items()))

    def restore_from(self) -> int:
        return 0

    def restore_batch(self, records: list[tuple[bytes, bytes | None]], end: int) -> None:
        self._raw.update(records)

    def restore_done(self) -> None:
        decode, states = self._decode, self._states
        for key, data in self._raw.items():
            if data is None:
                states.pop(key, None)
            else:
                states[key] = decode(data)
        self._raw = {}

    def applied(self, count: int) -> None:
        pass

    def snapshot(self) -> None:
        return None

    def checkpoint(self, snapshot: Any) -> None:
        pass

    def size(self) -> int:
        return len(self._states)

    def close(self) -> None:
        self._states = {}
