"""The RocksDB store (`rocksdict`): one database per table partition, kept across restarts.

It must never hold a state its changelog does not hold: a restart would trust it, skip the
inputs it reflects, and a crash before the changelog had them would lose them; or the other
way round, restore the changelog over it and double count. So applied states wait in a write
cache (`_dirty`, their encoded bytes) and reach the database only in a checkpoint, taken when
every changelog record sent before it is delivered (at each commit, on revocation and at
shutdown): one `WriteBatch` with the states, the skip map and the changelog offset they
correspond to. A restore then starts from that offset.

The offset is counted, not read from deliveries: the restore ends at the changelog's end E,
and this worker is then the partition's only writer, so after n records sent the changelog
holds at least E + n records. Anything that could add records (a producer retry duplicating a
batch, without idempotence) only makes the count a lower bound: a restore replays a few
records again, which is harmless (a record is a whole state, and positions only rise).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from rocksdict import Options, Rdict, WriteBatch

__all__ = ["CHECKPOINT_KEY", "RocksDBStore"]

# Beside the data in the same database; no key codec produces a leading NUL byte this way.
CHECKPOINT_KEY = b"\x00streamc.checkpoint"


class RocksDBStore:
    __slots__ = (
        "_base",
        "_db",
        "_decode",
        "_dirty",
        "_live",
        "_pending",
        "_sent",
        "_sent_positions",
        "_taken",
        "path",
        "positions",
    )

    def __init__(self, path: Path, decode: Callable[[bytes], Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), Options(raw_mode=True))
        self._decode = decode
        self._live: dict[bytes, Any] = {}  # decoded states read or applied since a checkpoint
        # Applied states whose changelog records are not sent yet (the run being folded), and
        # those sent but not checkpointed: key -> state bytes. Only sent ones may be
        # checkpointed, and only after a flush.
        # A None is a deletion (a closed window's tombstone).
        self._pending: dict[bytes, bytes | None] = {}
        self._dirty: dict[bytes, bytes | None] = {}
        # Snapshots taken and not written yet (a checkpoint waiting for the flush, or one not
        # written after a failure): their deletions must still hide what the database holds.
        self._taken: list[dict[bytes, bytes | None]] = []
        self.positions: dict[str, int] = {}
        self._base = 0  # the changelog offset the checkpoint covers
        self._sent = 0  # changelog records sent since the restore ended
        raw = self._db.get(CHECKPOINT_KEY)
        if raw is not None:
            mark = json.loads(raw)
            self._base = int(mark["offset"])
            self.positions = {str(k): int(v) for k, v in mark["positions"].items()}
        self._sent_positions = dict(self.positions)  # the skip map as of the last record sent

    @classmethod
    def wiped(cls, path: Path, decode: Callable[[bytes], Any]) -> RocksDBStore:
        """A new, empty store at `path` (whatever was there is deleted)."""
        shutil.rmtree(path, ignore_errors=True)
        return cls(path, decode)

    def get(self, key: bytes) -> Any | None:
        state = self._live.get(key)
        if state is None:
            if key in self._pending or key in self._dirty or self._is_taken(key):
                return None  # deleted, not checkpointed yet
            data = self._db.get(key)
            if data is None:
                return None
            state = self._live[key] = self._decode(data)
        return state

    def _is_taken(self, key: bytes) -> bool:
        return any(key in taken for taken in self._taken)

    def put(self, key: bytes, state: Any, data: bytes) -> None:
        self._live[key] = state
        self._pending[key] = data

    def delete(self, key: bytes) -> None:
        self._live.pop(key, None)
        self._pending[key] = None

    def items(self) -> Iterator[tuple[bytes, Any]]:
        live, pending, dirty = self._live, self._pending, self._dirty
        for key, data in self._db.items():
            if key == CHECKPOINT_KEY or key in live or key in pending or key in dirty:
                continue  # the live copy is yielded below; a pending None is a deletion
            if self._taken and self._is_taken(cast(bytes, key)):
                continue
            yield cast(bytes, key), self._decode(data)
        yield from list(live.items())

    def size(self) -> int:
        """RocksDB's own estimate of the keys checkpointed (counting them would read them all),
        without the checkpoint mark; keys written since the last checkpoint are not in it."""
        estimate = self._db.property_int_value("rocksdb.estimate-num-keys") or 0
        return max(estimate - 1, 0)

    def restore_from(self) -> int:
        return self._base

    def restore_batch(self, records: list[tuple[bytes, bytes | None]], end: int) -> None:
        # Straight to the database: these records are in the changelog already.
        batch = WriteBatch(raw_mode=True)
        for key, data in records:
            if data is None:
                batch.delete(key)
            else:
                batch.put(key, data)
        batch.put(CHECKPOINT_KEY, _mark(end, self.positions))
        self._db.write(batch)
        self._base = end

    def restore_done(self) -> None:
        self._sent = 0
        self._sent_positions = dict(self.positions)

    def applied(self, count: int) -> None:
        # The run's records are sent: in apply order, and nothing else applies to this
        # partition meanwhile (one aggregation per table, folding one run at a time).
        self._dirty.update(self._pending)
        self._pending.clear()
        self._sent += count
        self._sent_positions = dict(self.positions)

    def snapshot(self) -> tuple[dict[bytes, bytes | None], dict[str, int], int]:
        dirty, self._dirty = self._dirty, {}
        if dirty:
            self._taken.append(dirty)
        return dirty, self._sent_positions, self._base + self._sent

    def checkpoint(self, snapshot: Any) -> None:
        dirty, positions, offset = snapshot
        batch = WriteBatch(raw_mode=True)
        for key, data in dirty.items():
            if data is None:
                batch.delete(key)
            else:
                batch.put(key, data)
        batch.put(CHECKPOINT_KEY, _mark(offset, positions))
        self._db.write(batch)
        self._taken = [taken for taken in self._taken if taken is not dirty]
        # Checkpointed states are read back from the database when next needed: the cache
        # stays the size of what changes between two checkpoints.
        live, dirty_now, pending = self._live, self._dirty, self._pending
        for key in dirty:
            if key not in dirty_now and key not in pending:
                live.pop(key, None)

    def close(self) -> None:
        self._db.close()


def _mark(offset: int, positions: dict[str, int]) -> bytes:
    return json.dumps({"offset": offset, "positions": positions}, sort_keys=True).encode()
