"""Closed windows on the RocksDB store: a deletion stays deleted while its checkpoint waits for
the changelog flush (a snapshot taken, not yet written), so a closed window is neither read
back nor listed; then the checkpoint removes it from the database for good."""

from __future__ import annotations

from pathlib import Path

import msgspec
from streamc_runtime.state.rocksdb import RocksDBStore
from streamc_runtime.state.window_types import Windowed

_decode = msgspec.json.Decoder(Windowed[int]).decode


def test_a_window_deleted_before_a_checkpoint_snapshot_stays_deleted_until_and_after_it(
    tmp_path: Path,
) -> None:
    store = RocksDBStore(tmp_path / "0", _decode)
    store.restore_done()
    store.put(b"k1", Windowed(1000, 3), b"[1000,3]")
    store.put(b"k2", Windowed(2000, 1), b"[2000,1]")
    store.applied(2)
    store.checkpoint(store.snapshot())
    store.delete(b"k1")  # the window closed: its tombstone is sent
    store.applied(1)
    snapshot = store.snapshot()  # the checkpoint now waits for the flush
    assert store.get(b"k1") is None
    assert dict(store.items()) == {b"k2": Windowed(2000, 1)}
    store.checkpoint(snapshot)
    assert store.get(b"k1") is None
    store.close()
    again = RocksDBStore(tmp_path / "0", _decode)
    assert dict(again.items()) == {b"k2": Windowed(2000, 1)}
    assert again.restore_from() == 3
    again.close()
