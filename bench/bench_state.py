"""Table benchmark: the aggregate's cost per element, and restoring a table from its changelog.

    python bench/bench_state.py            # 1,000,000 elements; restore of 1,000,000 records
    python bench/bench_state.py --quick    # 100,000 of each
    python bench/bench_state.py --no-kafka # without (c), which needs the Tansu broker

(a) Aggregate: N small JSON orders keyed by account (1,000 accounts) on 4 partitions of the
memory broker, consumed by (1) one agent passing them through (bench_runtime's figure) and (2)
one agent folding them into a table (`count` and `sum`, memory store) whose changelog records
go out in runs, with the skip rule checked per element; msg/s of each, and the cost the
aggregate adds per element.

(b) Restore: a changelog partition of N records for N distinct keys (a skip map record every
1,000, as runs write them), restored into the memory store and into the RocksDB store (a
temporary folder); records/s (target >= 100,000/s).

(c) Restore through Tansu: the same changelog partition written to a Tansu broker (memory
storage, started here as the Kafka tests start it), then restored as a worker does, through the
Kafka transport's `read_partition` (a group-less consumer, assign and seek, to the high
watermark), into both stores; records/s.

Prints figures only; asserts nothing (but that every record was read).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamc_runtime import App, Record, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.state.changelog import POSITION_HEADER, map_record, restore
from streamc_runtime.state.memory import MemoryStore
from streamc_runtime.state.rocksdb import RocksDBStore
from streamc_runtime.transport import TP

PARTITIONS = 4
TESTS_KAFKA = str(Path(__file__).resolve().parents[1] / "tests" / "kafka")


class Order(Record, kw_only=True):
    id: int
    account_id: str
    amount: float


class Totals(Record, kw_only=True):
    account_id: str
    orders: int
    amount: float


class TotalsState(Record, kw_only=True):
    orders: int = 0
    amount: float = 0.0


def fold(state: TotalsState, order: Order) -> TotalsState:
    state.orders += 1
    state.amount += order.amount
    return state


def row(key: str, state: TotalsState) -> Totals:
    return Totals(account_id=key, orders=state.orders, amount=state.amount)


def by_account(order: Order) -> str:
    return order.account_id


def _app(counter: list[int], aggregate: bool, group_by: bool = False) -> App:
    app = App("bench")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=PARTITIONS)
    table = app.table(
        "totals", key_type=str, value_type=Totals, state_type=TotalsState, partitions=PARTITIONS
    )
    by = app.topic(
        "bench-by-account", key_type=str, value_type=Order, partitions=PARTITIONS, positions=True
    )

    @app.agent(orders, name="totals")
    async def totals(stream: Stream[Order]) -> None:
        n = 0
        source: Stream[Any] = stream.group_by(by_account, topic=by) if group_by else stream
        if aggregate:
            source = source.aggregate(table, fold=fold, row=row)
        async for _ in source:
            n += 1
            counter[0] = n

    return app


async def _run(
    n: int, aggregate: bool, group_by: bool = False, state_dir: str | None = None
) -> tuple[float, float]:
    broker = MemoryBroker()
    broker.create_topic("orders", PARTITIONS)
    for i in range(n):
        value = b'{"id":%d,"account_id":"acct-%d","amount":%d.5}' % (i, i % 1000, i % 100)
        broker.produce("orders", value, b"acct-%d" % (i % 1000))
    counter = [0]
    app = _app(counter, aggregate, group_by)
    worker = Worker(
        app,
        MemoryTransport(broker, "bench"),
        stats_interval=0,
        commit_interval=0.1,
        state_dir=state_dir,
    )
    start, cpu = time.perf_counter(), time.process_time()
    await worker.start()
    while counter[0] < n:  # noqa: ASYNC110 - a bench polls
        await asyncio.sleep(0.002)
    await worker.stop()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    committed = sum(broker.committed("bench", TP("orders", p)) or 0 for p in range(PARTITIONS))
    assert committed == n, (committed, n)
    if aggregate:
        assert len(broker.messages("bench-totals-changelog")) >= n
    return elapsed, cpu


def aggregate(n: int) -> None:
    plain, plain_cpu = asyncio.run(_run(n, aggregate=False))
    folded, folded_cpu = asyncio.run(_run(n, aggregate=True))
    print(f"(a) aggregate, {n:,} orders over 1,000 keys, memory store (wall; CPU of the process):")
    for what, wall, cpu in (("pass-through", plain, plain_cpu), ("aggregate", folded, folded_cpu)):
        print(
            f"  {what + ' agent':19}: {wall:6.2f} s  ({n / wall:10,.0f} msg/s, "
            f"{wall / n * 1e6:5.2f} us/element; CPU {cpu / n * 1e6:5.2f} us/element)"
        )
    print(
        f"  added per element  : {(folded - plain) / n * 1e6:6.2f} us "
        f"(CPU {(folded_cpu - plain_cpu) / n * 1e6:.2f} us)"
    )
    # P4's shape: re-keyed through a repartition topic, folded into a RocksDB store.
    plain, plain_cpu = asyncio.run(_run(n, aggregate=False, group_by=True))
    with tempfile.TemporaryDirectory() as state_dir:
        folded, folded_cpu = asyncio.run(_run(n, True, group_by=True, state_dir=state_dir))
    print("    group_by, then (P4's shape; RocksDB store):")
    for what, wall, cpu in (("group_by", plain, plain_cpu), ("+ aggregate", folded, folded_cpu)):
        print(
            f"  {what:19}: {wall:6.2f} s  ({n / wall:10,.0f} msg/s, "
            f"{wall / n * 1e6:5.2f} us/element; CPU {cpu / n * 1e6:5.2f} us/element)"
        )
    print(f"  added per element  : CPU {(folded_cpu - plain_cpu) / n * 1e6:.2f} us")


def _changelog(n: int) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("bench-totals-changelog", 1)
    positions: dict[str, int] = {}
    for i in range(n):
        key = b"acct-%d" % i
        value = b'{"orders":%d,"amount":%d.5}' % (i % 7 + 1, i % 100)
        mark = b"orders:%d:%d" % (i % PARTITIONS, i // PARTITIONS)
        broker.produce("bench-totals-changelog", value, key, ((POSITION_HEADER, mark),), 0)
        positions[f"orders:{i % PARTITIONS}"] = i // PARTITIONS
        if i % 1000 == 999:
            k, v, h = map_record(positions)
            broker.produce("bench-totals-changelog", v, k, h, 0)
    return broker


async def _restore(broker: MemoryBroker, store: MemoryStore | RocksDBStore) -> tuple[int, float]:
    transport = MemoryTransport(broker, "bench")
    start = time.perf_counter()
    count = await restore(transport, "bench-totals-changelog", 0, store, "bench")
    return count, time.perf_counter() - start


def restoring(n: int) -> None:
    broker = _changelog(n)
    decode: Any = _decoder()
    print(f"(b) restore, {n:,} changelog records for {n:,} keys:")
    count, took = asyncio.run(_restore(broker, MemoryStore(decode)))
    print(f"  memory store  : {took:6.2f} s  ({count / took:10,.0f} records/s)")
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder:
        store = RocksDBStore(Path(folder) / "0", decode)
        count, took = asyncio.run(_restore(broker, store))
        store.close()
        print(f"  RocksDB store : {took:6.2f} s  ({count / took:10,.0f} records/s)")


def _changelog_records(n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The records of `_changelog`, as (key, value, headers)."""
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    positions: dict[str, int] = {}
    for i in range(n):
        key = b"acct-%d" % i
        value = b'{"orders":%d,"amount":%d.5}' % (i % 7 + 1, i % 100)
        mark = b"orders:%d:%d" % (i % PARTITIONS, i // PARTITIONS)
        records.append((key, value, [(POSITION_HEADER, mark)]))
        positions[f"orders:{i % PARTITIONS}"] = i // PARTITIONS
        if i % 1000 == 999:
            k, v, h = map_record(positions)
            records.append((k, v, list(h)))
    return records


async def _kafka_restores(n: int) -> list[tuple[str, int, float]]:
    """Write the changelog partition to a fresh Tansu broker, then restore it through the
    Kafka transport into each store: (store, records read, seconds)."""
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from streamc_runtime.kafka import KafkaSettings, KafkaTransport

    sys.path.insert(0, TESTS_KAFKA)  # the Kafka tests' broker launcher
    import tansu_broker

    topic = "bench-totals-changelog"
    records = _changelog_records(n)
    out: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-state-") as folder:
        proc, port = await tansu_broker.start(Path(folder) / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
        try:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                config = {"cleanup.policy": "compact"}
                await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
            finally:
                await admin.close()
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20
            )
            await producer.start()
            try:
                batch = producer.create_batch()
                sent = []
                for key, value, headers in records:
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        sent.append(await producer.send_batch(batch, topic, partition=0))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None, headers=headers)
                sent.append(await producer.send_batch(batch, topic, partition=0))
                await asyncio.gather(*sent)
            finally:
                await producer.stop()
            transport = KafkaTransport(
                KafkaSettings(bootstrap_servers=(bootstrap,), group_id="bench-restore")
            )
            decode: Any = _decoder()
            store: MemoryStore | RocksDBStore = MemoryStore(decode)
            start = time.perf_counter()
            count = await restore(transport, topic, 0, store, "bench")
            out.append(("memory store", count, time.perf_counter() - start))
            store = RocksDBStore(Path(folder) / "0", decode)
            start = time.perf_counter()
            count = await restore(transport, topic, 0, store, "bench")
            out.append(("RocksDB store", count, time.perf_counter() - start))
            store.close()
        finally:
            tansu_broker.stop(proc)
    for what, count, _took in out:
        assert count == len(records), (what, count, len(records))
    return out


def restoring_kafka(n: int) -> None:
    print(f"(c) restore through Tansu (Kafka transport), {n:,} changelog records for {n:,} keys:")
    try:
        results = asyncio.run(_kafka_restores(n))
    except Exception as exc:  # no broker here: say so, the rest of the bench stands
        print(f"  not measured: {type(exc).__name__}: {exc}")
        return
    for what, count, took in results:
        print(f"  {what:13} : {took:6.2f} s  ({count / took:10,.0f} records/s)")


def _decoder() -> object:
    import msgspec

    return msgspec.json.Decoder(TotalsState).decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-kafka", action="store_true", help="skip (c), the Tansu restore")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = 100_000 if args.quick else 1_000_000
    aggregate(n)
    restoring(n)
    if not args.no_kafka:
        restoring_kafka(n)


if __name__ == "__main__":
    main()
