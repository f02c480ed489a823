"""Driving the stateful `counts` app (apps/counts.sdl) on the real broker, from outside.

The worker is `apps/counts_worker`, the package streamc generates from `apps/counts.sdl`
(written by hand while the compiler learns `table` and `aggregate`; swap in `build(...)` of
the .sdl once it does). Everything here reads Kafka with plain aiokafka, independently of the
transport under test: the changelog and the published totals are read to each partition's
fetch high watermark (Tansu's `end_offsets()` is wrong, shared/design/tansu.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from kafkatest import Broker, wait_until
from workers import Out, Worker, ends

APPS = Path(__file__).parent / "apps"
PACKAGE = "counts_worker"
GROUP = "counts"
PARTITIONS = 4
ORDERS = "orders"
PUBLISHED = "account_totals"
REPARTITION = "counts-totals-orders-account_id-repartition"
CHANGELOG = "counts-totals_by_account-changelog"
POSITIONS_HEADER = "streamc.positions"  # the skip map records of a changelog (not data)

Totals = dict[str, tuple[int, float]]  # account -> (orders, amount)


@dataclass(frozen=True)
class Order:
    id: str
    account_id: str
    amount: float

    def encoded(self) -> tuple[bytes, bytes]:
        value = {"id": self.id, "account_id": self.account_id, "amount": self.amount}
        return self.id.encode(), json.dumps(value).encode()


def make_orders(n: int, accounts: int, rng: random.Random, prefix: str = "o") -> list[Order]:
    """`n` orders spread over `accounts` accounts. Amounts are quarters (exact in binary), so
    a sum is exact whatever order the table folds them in."""
    return [
        Order(f"{prefix}{i}", f"acct-{rng.randrange(accounts)}", rng.randrange(1, 4000) / 4)
        for i in range(n)
    ]


def exact(orders: Iterable[Order]) -> Totals:
    """What counting and summing every order exactly once gives."""
    out: dict[str, tuple[int, float]] = {}
    for o in orders:
        count, amount = out.get(o.account_id, (0, 0.0))
        out[o.account_id] = (count + 1, amount + o.amount)
    return out


def start_worker(
    workers: list[Worker], broker: Broker, log: Path, state_dir: Path | None = None
) -> Worker:
    args: tuple[str, ...] = ("--commit-interval", "0.5", "--log-level", "INFO")
    if state_dir is not None:
        args += ("--state-dir", str(state_dir))
    worker = Worker(PACKAGE, APPS, broker, log, args=args).start()
    workers.append(worker)
    return worker


async def joined(worker: Worker, within: float = 30) -> None:
    await wait_until(
        lambda: bool(worker.assignment()) or not worker.alive, within, "the worker to join"
    )
    assert worker.alive, worker.tail()


async def produce_orders(
    broker: Broker, orders: Sequence[Order], seconds: float = 0.0
) -> list[tuple[int, int]]:
    """Produce `orders` to `orders`, keyed by order id (so every input partition feeds every
    table partition), round robin over its partitions, in whole batches: 100,000 orders take
    a second, not a minute. With `seconds`, in slices spread over that long, so a worker is in
    the middle of its work all that time. Returns each batch's (partition, last offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    placed: list[tuple[int, int]] = []
    try:
        slices = max(1, round(seconds / 0.1))
        step = -(-len(orders) // slices)
        sent, counts = [], []
        for at in range(0, len(orders), step):
            if at:
                await asyncio.sleep(seconds / slices)  # pacing, not waiting for a state
            part = orders[at : at + step]
            for p in range(PARTITIONS):
                mine = part[p::PARTITIONS]
                i = 0
                while i < len(mine):
                    batch, first = producer.create_batch(), i
                    while i < len(mine):
                        key, value = mine[i].encoded()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            break
                        i += 1
                    sent.append(await producer.send_batch(batch, ORDERS, partition=p))
                    counts.append(i - first)
        # A batch's metadata has its first offset.
        for meta, count in zip(await asyncio.gather(*sent), counts, strict=True):
            placed.append((meta.partition, meta.offset + count - 1))
    finally:
        await producer.stop()
    return placed


async def read_to_end(broker: Broker, topic: str, within: float = 60) -> list[Out]:
    """Every record of every partition of `topic`, up to each partition's high watermark as
    the fetches report it (an empty partition: a fetch answered with watermark 0)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    got: list[Out] = []
    try:
        deadline = time.monotonic() + within
        parts: Any = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic!r} never appeared")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for records in batches.values():
                got.extend(
                    Out(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in records
                )
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    pending.discard(tp)
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic!r}: not read to its end within {within}s")
    finally:
        await consumer.stop()
    return got


async def high_watermarks(broker: Broker, topic: str, within: float = 30) -> dict[int, int]:
    """Each partition's high watermark, from one small fetch of it (not `end_offsets()`)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + within
        while any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200)
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic!r}: no high watermark within {within}s")
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


def changelog_totals(records: Iterable[Out]) -> Totals:
    """The table as its changelog holds it: the last data record per key (skip maps aside)."""
    last: dict[bytes, bytes | None] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if any(name == POSITIONS_HEADER for name, _ in r.headers):
            continue
        assert r.key is not None
        last[r.key] = r.value
    out: Totals = {}
    for key, value in last.items():
        assert value is not None, f"a tombstone for {key!r}"
        state = json.loads(value)
        out[key.decode()] = (state["orders"], state["amount"])
    return out


def published_totals(records: Iterable[Out]) -> Totals:
    """The last value published per key on `account_totals` (its partitions keep key order)."""
    out: Totals = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.key is not None and r.value is not None
        row = json.loads(r.value)
        assert row["account_id"] == r.key.decode()
        out[row["account_id"]] = (row["orders"], row["amount"])
    return out


class Progress:
    """The group's committed offsets, read by one long-lived consumer (no group join)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=GROUP, enable_auto_commit=False
        )

    async def __aenter__(self) -> Progress:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def committed(self, topic: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for p in range(PARTITIONS):
            out[p] = await self._consumer.committed(TopicPartition(topic, p)) or 0
        return out

    async def folded(self) -> int:
        """Repartitioned orders whose aggregation is committed (duplicates included)."""
        return sum((await self.committed(REPARTITION)).values())

    async def wait_done(self, placed: Iterable[tuple[int, int]], within: float = 120) -> None:
        """Until every order is committed, and then every repartitioned record: both stages
        are through, the changelog and the published totals delivered."""
        want = ends(placed)
        deadline = time.monotonic() + within
        while True:
            got = await self.committed(ORDERS)
            if all(got[p] >= o for p, o in want.items()):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"orders committed {got}, want {want}")
            await asyncio.sleep(0.2)
        # The forwards are delivered before the orders commit: the repartition topic is final.
        repartitioned = await high_watermarks(self._broker, REPARTITION)
        while True:
            got = await self.committed(REPARTITION)
            if all(got[p] >= o for p, o in repartitioned.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"repartition committed {got}, want {repartitioned}")
            await asyncio.sleep(0.2)
