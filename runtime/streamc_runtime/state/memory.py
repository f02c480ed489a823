"""The in-memory store: a dict of decoded states per table partition (the default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MemoryStore"]


class MemoryStore:
    """Lost with the worker: a restore replays the whole changelog partition (or, kept across
    a revocation, what was written after its own records)."""

    __slots__ = ("_decode", "_end", "_raw", "_states", "positions")

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        self._states: dict[bytes, Any] = {}
        # During a restore: the last state bytes per key, decoded once at the end (a key
        # rewritten a thousand times in the changelog is decoded once, not a thousand times).
        self._raw: dict[bytes, bytes | None] = {}
        self.positions: dict[str, int] = {}
        # The changelog offset the states reach (restored to, plus the records sent since):
        # a store kept across a revocation restores from there (a lower bound, like RocksDB's
        # checkpoint offset: replaying a record again is harmless).
        self._end = 0

    def get(self, key: bytes) -> Any | None:
        return self._states.get(key)

    def put(self, key: bytes, state: Any, data: bytes) -> None:
        self._states[key] = state

    def delete(self, key: bytes) -> None:
        self._states.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, Any]]:
        return iter(list(self._states.items()))

    def restore_from(self) -> int:
        return self._end

    def restore_batch(self, records: list[tuple[bytes, bytes | None]], end: int) -> None:
        self._raw.update(records)
        self._end = end

    def restore_done(self) -> None:
        decode, states = self._decode, self._states
        for key, data in self._raw.items():
            if data is None:
                states.pop(key, None)
            else:
                states[key] = decode(data)
        self._raw = {}

    def applied(self, count: int) -> None:
        self._end += count

    def snapshot(self) -> None:
        return None

    def checkpoint(self, snapshot: Any) -> None:
        pass

    def size(self) -> int:
        return len(self._states)

    def close(self) -> None:
        self._states = {}
