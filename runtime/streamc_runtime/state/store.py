"""The interface of a table partition's store, shared by the memory and RocksDB stores.

A store holds the decoded state of each key of one table partition, keyed by the key's raw
bytes (as the changelog record's key), and the skip map: for each source partition
(`"<topic>:<partition>"`), the highest source offset already applied here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Store"]


class Store(Protocol):
    positions: dict[str, int]  # source partition -> highest source offset applied

    def get(self, key: bytes) -> Any | None:
        """The key's current state (the object itself: a fold may change it), or None."""

    def put(self, key: bytes, state: Any, data: bytes) -> None:
        """Set the key's state; `data` is its encoding, as written to the changelog."""

    def delete(self, key: bytes) -> None:
        """Remove the key (a closed window); its changelog record is a tombstone."""

    def items(self) -> Iterator[tuple[bytes, Any]]:
        """Every key and its state."""

    def restore_from(self) -> int:
        """The changelog offset a restore starts reading at (after what the store holds)."""

    def restore_batch(self, records: list[tuple[bytes, bytes | None]], end: int) -> None:
        """Apply changelog records (key, state bytes or None to delete), in order; `end` is
        the changelog offset after them."""

    def restore_done(self) -> None:
        """The restore caught up with the changelog."""

    def applied(self, count: int) -> None:
        """`count` more changelog records of this partition were sent (in apply order)."""

    def snapshot(self) -> Any:
        """What a checkpoint will write once every changelog record sent so far is
        delivered: taken before the flush, so what is applied meanwhile is not included."""

    def checkpoint(self, snapshot: Any) -> None:
        """Write `snapshot` durably (a persistent store); the changelog holds all of it."""

    def size(self) -> int:
        """How many keys it holds (for metrics; persistent stores may estimate)."""

    def close(self) -> None: ...
