"""Tables: `App.table` and `Stream.aggregate` on the memory broker, exact across restarts,
revocations, replays and compaction; memory and RocksDB stores."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rocksdict import Options, Rdict
from rtkit import GatedTransport, Order, Running
from statekit import AccountTotals, TotalsState, exact, totals_app
from streamc_runtime.local import until_idle
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport
from streamc_runtime.state import POSITIONS_KEY, table_rows
from streamc_runtime.state.rocksdb import CHECKPOINT_KEY
from streamc_runtime.transport import TP
from streamc_runtime.worker import Worker

CHANGELOG = "shop-totals-changelog"
REPARTITION = "shop-totals-orders-account_id-repartition"


def orders(n: int, accounts: int = 5, start: int = 0) -> list[Order]:
    return [Order(account_id=f"acc{i % accounts}", amount=float(i)) for i in range(start, n)]


def produce(r: Running, items: list[Order], topic: str = "orders") -> None:
    for o in items:
        r.produce(topic, o, key=o.account_id)


def last_published(broker: MemoryBroker) -> dict[str, AccountTotals]:
    out = {}
    for m in broker.messages("account_totals"):
        out[(m.key or b"").decode()] = msgspec.json.decode(m.value or b"", type=AccountTotals)
    return out


def reset_group(broker: MemoryBroker, topic: str = "orders") -> None:
    """Commit offset 0 everywhere: the next worker reads its input again (a restart from an
    older committed offset)."""
    n = broker.partitions_for(topic) or 0
    broker._commit("shop", {TP(topic, p): 0 for p in range(n)})


async def test_counts_and_sums_per_key_reach_the_table_and_each_update_is_published() -> None:
    app = totals_app(partitions=3)
    items = orders(40)
    r = Running(app)
    async with r:
        produce(r, items)
        await r.idle()
        assert r.worker.table("totals") == exact(items)
    assert r.broker.topic_config(CHANGELOG) == {"cleanup.policy": "compact"}
    assert r.broker.partitions_for(CHANGELOG) == 3
    published = r.values("account_totals", AccountTotals)
    assert len(published) == 40  # one updated row per input
    assert last_published(r.broker) == exact(items)
    # every update in order: acc0 sees orders 0, 5, 10, ... and its row counts up
    acc0 = [t for t in published if t.account_id == "acc0"]
    assert [(t.orders, t.amount) for t in acc0] == [
        (k + 1, float(sum(range(0, 5 * k + 1, 5)))) for k in range(8)
    ]
    assert table_rows(r.broker, app.tables["totals"]) == exact(items)
    # one changelog record per input, then one skip map per partition per run
    data = [m for m in r.broker.messages(CHANGELOG) if m.key != POSITIONS_KEY]
    assert len(data) == 40
    assert all(m.headers[0][0] == "streamc.position" for m in data)
    assert r.committed("orders") == r.end_offsets("orders")


@pytest.mark.parametrize("source", ["orders", "orders%d%%s"])
async def test_forwards_to_positions_topics_carry_the_source_position(source: str) -> None:
    # `%` in a topic name: the mark is formatted per chunk, and the name must stay as it is.
    app = totals_app(partitions=2, source=source)
    r = Running(app)
    async with r:
        r.produce(source, Order(account_id="x", amount=1.0), key="k", partition=1)
        r.produce(
            source,
            Order(account_id="y", amount=2.0),
            key="k",
            partition=1,
            headers=[("streamc.position", b"upstream:7:42")],
        )
        r.produce(
            source,
            Order(account_id="z", amount=3.0),
            key="k",
            partition=1,
            headers=[("trace", b"t1")],
        )
        await r.idle()
    headers = sorted(m.headers for m in r.messages(REPARTITION))
    assert headers == [
        (("streamc.position", f"{source}:1:0".encode()),),
        (("streamc.position", b"upstream:7:42"),),  # the original one is kept
        (("trace", b"t1"), ("streamc.position", f"{source}:1:2".encode())),  # added after
    ]


@pytest.mark.parametrize("fused", [False, True], ids=["to", "fused loop"])
async def test_revocation_and_reassignment_restore_the_table_from_its_changelog(
    fused: bool,
) -> None:
    app = totals_app(partitions=2, fused=fused)
    first, second = orders(30), orders(60, start=30)
    a = Running(app)
    async with a:
        produce(a, first)
        await a.idle()
        b_transport = MemoryTransport(a.broker, "shop")
        b = Worker(app, b_transport, stats_interval=0, commit_interval=60.0)
        await b.start()  # joins: partitions 1 move to b (after a revokes them)
        try:
            produce(a, second)
            await until_idle(a.worker)
            await until_idle(b)
            assert {tp.partition for tp in b_transport.assignment()} == {1}
            both = a.worker.table("totals") | b.table("totals")
            assert both == exact(first + second)
            assert set(a.worker.table("totals")).isdisjoint(b.table("totals"))
        finally:
            await b.stop()  # its partitions come back to a, restored again
        produce(a, orders(70, start=60))
        await a.idle()
        assert a.worker.table("totals") == exact(orders(70))
    assert last_published(a.broker) == exact(orders(70))


async def test_replayed_input_from_an_older_committed_offset_is_skipped_and_rows_republished() -> (
    None
):
    app = totals_app(partitions=2)
    items = orders(20)
    r = Running(app)
    async with r:
        produce(r, items)
        await r.idle()
    reset_group(r.broker)  # and the repartition topic keeps its committed offsets
    published = r.end_offsets("account_totals")
    again = Running(app, r.broker)
    async with again:
        await again.idle()
        assert again.worker.table("totals") == exact(items)  # not 2x
    # the replays went through group_by again (duplicates with new offsets), were skipped, and
    # each passed on the key's current row
    assert len(again.messages(REPARTITION)) == 40
    republished = [
        msgspec.json.decode(m.value or b"", type=AccountTotals)
        for m in again.messages("account_totals")
        if m.offset >= published[m.partition]
    ]
    assert len(republished) == 20
    assert republished == [exact(items)[t.account_id] for t in republished]
    assert table_rows(r.broker, app.tables["totals"]) == exact(items)


async def test_a_duplicate_in_the_repartition_topic_is_not_applied_twice() -> None:
    app = totals_app(partitions=2)
    r = Running(app)
    async with r:
        produce(r, orders(10))
        await r.idle()
        original = r.messages(REPARTITION)[0]
        r.broker.produce(REPARTITION, original.value, original.key, original.headers)
        await r.idle()
        assert r.worker.table("totals") == exact(orders(10))
    assert last_published(r.broker) == exact(orders(10))
    assert len(r.messages("account_totals")) == 11  # the duplicate republished the row


def compact(broker: MemoryBroker, topic: str) -> None:
    """Kafka's compaction, simulated: each partition keeps only the last record of each key
    (the skip map's reserved key included), in offset order."""
    for part in broker._topics[topic]:
        last: dict[bytes | None, MemoryMessage] = {}
        for m in part.messages:
            last[m.key] = m
        kept = sorted(last.values(), key=lambda m: m.offset)
        # The memory broker keeps offsets dense: the survivors are renumbered, which a
        # changelog read from the start does not notice.
        part.messages = [
            MemoryMessage(
                m.topic, m.partition, part.base + i, m.timestamp, m.key, m.value, m.headers
            )
            for i, m in enumerate(kept)
        ]


async def test_restore_after_compaction_keeps_the_skip_map_and_stays_exact() -> None:
    # Two source partitions feed each table partition: a later update of a key from orders[1]
    # makes compaction drop the record that carried orders[0]'s highest position.
    app = totals_app(partitions=2)
    items = [Order(account_id=f"acc{i % 3}", amount=float(i)) for i in range(30)]
    r = Running(app)
    async with r:
        for i, o in enumerate(items):
            r.produce("orders", o, key=f"k{i}", partition=i % 2)
        await r.idle()
    before = len(r.broker.messages(CHANGELOG))
    compact(r.broker, CHANGELOG)
    assert len(r.broker.messages(CHANGELOG)) < before
    reset_group(r.broker)
    again = Running(app, r.broker)
    async with again:
        await again.idle()
        assert again.worker.table("totals") == exact(items)
    assert last_published(r.broker) == exact(items)


async def test_a_fold_that_raises_dead_letters_the_element_and_leaves_the_state() -> None:
    from streamc_runtime import App, Stream

    app = App("shop")
    src = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    table = app.table(
        "totals", key_type=str, value_type=AccountTotals, state_type=TotalsState, partitions=1
    )

    def fold(state: TotalsState, order: Order) -> TotalsState:
        state.orders += 1  # changed in place before it fails: must not stick
        if order.amount < 0:
            raise ValueError("negative")
        state.amount += order.amount
        return state

    def row(key: str, state: TotalsState) -> AccountTotals:
        return AccountTotals(account_id=key, orders=state.orders, amount=state.amount)

    @app.agent(src, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        async for _ in stream.aggregate(table, fold=fold, row=row):
            pass

    r = Running(app)
    async with r:
        for amount in (1.0, -1.0, 2.0):
            r.produce("orders", Order(account_id="a", amount=amount), key="a")
        await r.idle()
        assert r.worker.table("totals") == {
            "a": AccountTotals(account_id="a", orders=2, amount=3.0)
        }
    assert len(r.messages("shop-dlq")) == 1
    assert r.committed("orders") == {0: 3}


# -- RocksDB -----------------------------------------------------------------------------


def db_contents(path: Path) -> tuple[dict[bytes, bytes], dict[str, Any] | None]:
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        items = {k: v for k, v in db.items() if k != CHECKPOINT_KEY}
        mark = db.get(CHECKPOINT_KEY)
    finally:
        db.close()
    return items, None if mark is None else msgspec.json.decode(mark)


async def test_rocksdb_store_restores_from_its_checkpoint_and_the_changelog_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = totals_app(partitions=1)
    r = Running(app, state_dir=tmp_path)
    async with r:
        produce(r, orders(10))
        await r.idle()
    # the stop checkpointed the store: 10 records and the skip map, at offset 11
    items, mark = db_contents(tmp_path / "shop" / "totals" / "0")
    assert mark == {"offset": 11, "positions": {"orders:0": 9}}
    assert {k: msgspec.json.decode(v, type=TotalsState) for k, v in items.items()} == {
        k.encode(): TotalsState(orders=t.orders, amount=t.amount)
        for k, t in exact(orders(10)).items()
    }
    # a worker without the state dir (memory store) writes more changelog meanwhile
    other = Running(app, r.broker)
    async with other:
        produce(other, orders(15, start=10))
        await other.idle()
    caplog.set_level(logging.INFO, logger="streamc")
    again = Running(app, r.broker, state_dir=tmp_path)
    async with again:
        await again.idle()
        assert again.worker.table("totals") == exact(orders(15))
        produce(again, orders(18, start=15))
        await again.idle()
        assert again.worker.table("totals") == exact(orders(18))
    restored = [m for m in caplog.messages if m.startswith("restored table totals[0]")]
    assert restored[0].startswith("restored table totals[0]: 6 records")  # the tail only
    _, mark = db_contents(tmp_path / "shop" / "totals" / "0")
    end = r.broker.end_offset(TP(CHANGELOG, 0))
    assert mark == {"offset": end, "positions": {"orders:0": 17}}


async def test_rocksdb_store_never_holds_a_state_whose_changelog_record_failed(
    tmp_path: Path,
) -> None:
    app = totals_app(partitions=1)
    r = Running(app, state_dir=tmp_path)
    async with r:
        produce(r, orders(5))
        await r.idle()
    broker = r.broker
    t = GatedTransport(broker, "shop", failing=[CHANGELOG], fail_late=True)
    w = Worker(app, t, stats_interval=0, commit_interval=60.0, state_dir=tmp_path)
    await w.start()
    for o in orders(8, start=5):
        broker.produce("orders", msgspec.json.encode(o), o.account_id.encode())
    await asyncio.wait_for(until_idle(w), 5)
    assert w.table("totals") == exact(orders(8))  # applied in memory, not delivered
    await w.commit()  # the checkpoint's flush finds the lost records: nothing is written
    await w.stop()
    assert await w.wait() == 1
    items, mark = db_contents(tmp_path / "shop" / "totals" / "0")
    assert mark == {"offset": 6, "positions": {"orders:0": 4}}
    assert {k: msgspec.json.decode(v, type=TotalsState).orders for k, v in items.items()} == {
        f"acc{i}".encode(): 1 for i in range(5)
    }
    # the repartitioned orders whose changelog records were lost stay uncommitted
    assert broker.committed("shop", TP(REPARTITION, 0)) == 5


async def test_rocksdb_stores_are_checkpointed_on_revocation(tmp_path: Path) -> None:
    app = totals_app(partitions=2)
    a = Running(app, state_dir=tmp_path / "a")
    async with a:
        produce(a, orders(20))
        await a.idle()
        b = Worker(app,
            MemoryTransport(a.broker, "shop"), stats_interval=0, state_dir=tmp_path / "b"
        )
        await b.start()
        try:
            await until_idle(a.worker)
            await until_idle(b)
            # a gave partition 1 up: its store was flushed and checkpointed to the changelog end
            _, mark = db_contents(tmp_path / "a" / "shop" / "totals" / "1")
            assert mark is not None
            assert mark["offset"] == a.broker.end_offset(TP(CHANGELOG, 1))
            assert b.table("totals") == {
                k: v for k, v in exact(orders(20)).items() if k in b.table("totals")
            }
            assert b.table("totals")
        finally:
            await b.stop()


async def test_streamc_run_table_option_prints_final_rows_sorted_by_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamc.cli import _write_table

    app = totals_app(partitions=2)
    r = Running(app)
    async with r:
        produce(r, orders(7, accounts=3))
        await r.idle()
    _write_table(r.broker, app.tables["totals"], "-")
    assert capsys.readouterr().out.splitlines() == [
        '{"key":"acc0","value":{"account_id":"acc0","orders":3,"amount":9.0}}',
        '{"key":"acc1","value":{"account_id":"acc1","orders":2,"amount":5.0}}',
        '{"key":"acc2","value":{"account_id":"acc2","orders":2,"amount":7.0}}',
    ]


def test_worker_state_dir_option_and_environment_reach_the_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streamc_runtime import main as worker_module

    seen: list[str | None] = []

    async def serve(app: Any, transport: Any, interval: float, state_dir: str | None) -> int:
        seen.append(state_dir)
        return 0

    monkeypatch.setattr(worker_module, "_serve", serve)
    app = totals_app()
    assert worker_module.worker_main(app, ["--state-dir", str(tmp_path)]) == 0
    monkeypatch.setenv("STREAMC_STATE_DIR", str(tmp_path / "env"))
    assert worker_module.worker_main(app, []) == 0
    monkeypatch.delenv("STREAMC_STATE_DIR")
    assert worker_module.worker_main(app, []) == 0
    assert seen == [str(tmp_path), str(tmp_path / "env"), None]
