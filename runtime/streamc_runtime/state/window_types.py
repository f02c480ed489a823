"""Window kinds and window values: the `Tumbling`, `Hopping` and `Session` specs, a `Window`
[start, end), a windowed table's stored value (`Windowed`), and the layout of its store keys
(the key's bytes, then the window start as 8 bytes big-endian: a key's windows sort by time).
The windowed aggregation itself is in `windows.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from ..records import Time

__all__ = [
    "Hopping",
    "Session",
    "Tumbling",
    "Window",
    "WindowSpec",
    "Windowed",
    "rows_of",
    "split_key",
    "window_key",
    "window_starts",
]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Windows [n*size, (n+1)*size) (milliseconds), closed `grace` ms after their end."""

    size: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("size", self.size)
        _not_negative("grace", self.grace)

    @property
    def advance(self) -> int:
        return self.size


@dataclass(frozen=True, slots=True)
class Hopping:
    """Windows [n*advance, n*advance + size), `size` a multiple of `advance`."""

    size: int
    advance: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("size", self.size)
        _positive("advance", self.advance)
        _not_negative("grace", self.grace)
        if self.advance > self.size or self.size % self.advance:
            raise ValueError(f"hopping window: advance {self.advance} must divide size {self.size}")


@dataclass(frozen=True, slots=True)
class Session:
    """Per key, events closer than `gap` ms form a session [first, last + gap)."""

    gap: int
    grace: int = 0

    def __post_init__(self) -> None:
        _positive("gap", self.gap)
        _not_negative("grace", self.grace)


WindowSpec = Tumbling | Hopping | Session


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"window {name} must be a positive number of milliseconds, got {value!r}")


def _not_negative(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"window {name} must be >= 0 milliseconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class Window:
    """A window [start, end): `start_ms`/`end_ms` in epoch milliseconds, `start`/`end` as
    timezone-aware UTC datetimes."""

    start_ms: int
    end_ms: int

    @property
    def start(self) -> Time:
        return _time(self.start_ms)

    @property
    def end(self) -> Time:
        return _time(self.end_ms)


# Window bounds as Times, shared: a row per fold asks for them, the keys of a partition share
# a few windows, and building a datetime costs more than the rest of the row. Immutable, so
# sharing is safe; cleared when full rather than evicted one by one.
_TIMES: dict[int, Time] = {}
_TIMES_MAX = 4096


def _time(ms: int) -> Time:
    t = _TIMES.get(ms)
    if t is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        t = _TIMES[ms] = Time.from_ms(ms)
    return t


class Windowed(msgspec.Struct, Generic[S], array_like=True, gc=False):
    """A window's stored value: its end (ms; a session's grows) and the aggregation state.

    Untracked by the cycle collector (`gc=False`): a store holds one per open window, tens of
    thousands, and each full collection walked them all; a Windowed never takes part in a
    cycle (nothing a state holds can reach its Windowed)."""

    end: int
    state: S


def window_starts(spec: Tumbling | Hopping, t: int) -> range:
    """The starts of the windows an event at `t` belongs to: multiples of the advance, s <=
    t < s + size (oldest first)."""
    advance = spec.advance
    last = t - t % advance  # floor, for negative times too
    return range(last - spec.size + advance, last + 1, advance)


def window_key(key: bytes, start: int) -> bytes:
    return key + (start + 2**63).to_bytes(8, "big")  # offset: negative starts sort first


def split_key(raw: bytes) -> tuple[bytes, int]:
    return raw[:-8], int.from_bytes(raw[-8:], "big") - 2**63


def rows_of(
    row: Callable[..., Any] | None,
    items: Iterator[tuple[bytes, Any]],
    decode_key: Callable[[bytes], Any],
) -> dict[Any, Any]:
    """The rows of a windowed table's stored windows: {(key, Window): row} (the states
    themselves without a row function)."""
    out: dict[Any, Any] = {}
    for raw, w in items:
        key_bytes, start = split_key(raw)
        key = decode_key(key_bytes)
        window = Window(start, w.end)
        out[(key, window)] = w.state if row is None else row(key, window, w.state)
    return out
