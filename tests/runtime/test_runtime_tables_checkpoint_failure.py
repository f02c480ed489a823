"""A RocksDB checkpoint (one WriteBatch per store) that fails: the store keeps its previous
checkpoint, is never checkpointed again (the states it held are no longer waiting to be
written), every other store is still checkpointed and every store is closed, and the worker
stops with the failure. The changelog holds everything, so a restart is exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from rocksdict import Options, Rdict
from rtkit import Order, Running
from statekit import exact, totals_app
from streamc_runtime.memory import partition_for_key
from streamc_runtime.state.rocksdb import CHECKPOINT_KEY
from streamc_runtime.transport import TP

CHANGELOG = "shop-totals-changelog"


class FailingWrites:
    """A RocksDB database whose writes fail (a full disk), reads going through."""

    def __init__(self, db: Rdict) -> None:
        self.db = db

    def write(self, batch: Any) -> None:
        raise OSError("No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def orders(n: int, start: int = 0) -> list[Order]:
    return [Order(account_id=f"acc{i % 6}", amount=float(i)) for i in range(start, n)]


def produce(r: Running, items: list[Order]) -> None:
    for o in items:
        r.produce("orders", o, key=o.account_id)


def mark_of(path: Path) -> dict[str, Any] | None:
    db = Rdict(str(path), Options(raw_mode=True))  # raises if the store was left open
    try:
        mark = db.get(CHECKPOINT_KEY)
    finally:
        db.close()
    return None if mark is None else msgspec.json.decode(mark)


async def test_a_failed_checkpoint_stops_the_worker_and_leaves_every_store_closed_and_exact(
    tmp_path: Path,
) -> None:
    assert {partition_for_key(f"acc{i}".encode(), 2) for i in range(6)} == {0, 1}
    app = totals_app(partitions=2)
    r = Running(app, state_dir=tmp_path)
    stores = tmp_path / "shop" / "totals"
    async with r:
        produce(r, orders(12))
        await r.idle()
        assert await r.worker.commit()
        first = {q: r.broker.end_offset(TP(CHANGELOG, q)) for q in (0, 1)}
        produce(r, orders(24, start=12))
        await r.idle()
        held = r.worker.tables.tables["totals"].held
        failing = held[0].store
        failing._db = FailingWrites(failing._db)  # type: ignore[attr-defined]
    assert r.worker.failure is not None and "No space left" in str(r.worker.failure)
    assert await r.worker.wait() == 1
    # store 0 keeps the checkpoint of the first commit; store 1 reached its changelog's end
    assert (mark_of(stores / "0") or {}).get("offset") == first[0]
    assert (mark_of(stores / "1") or {}).get("offset") == r.broker.end_offset(TP(CHANGELOG, 1))
    failing._db = failing._db.db  # type: ignore[attr-defined]
    again = Running(app, r.broker, state_dir=tmp_path)
    async with again:
        await again.idle()
        assert again.worker.table("totals") == exact(orders(24))
