"""The in-memory broker behaves like Kafka where the runtime can tell."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Collection

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2  # type: ignore[import-untyped]
from streamc_runtime.memory import (
    _CHUNK,
    MemoryBroker,
    MemoryMessage,
    MemoryTransport,
    murmur2,
    partition_for_key,
)
from streamc_runtime.transport import TP, TopicSpec


def test_murmur2_matches_kafka() -> None:
    # Kafka's own test vectors (kafka-clients UtilsTest), as unsigned ints
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"abc": 479470107,
    }
    for data, signed in vectors.items():
        assert murmur2(data) == signed & 0xFFFFFFFF
    for n in range(300):
        data = os.urandom(n % 41)
        assert murmur2(data) & 0x7FFFFFFF == aiokafka_murmur2(data) & 0x7FFFFFFF


def test_keyed_records_land_on_the_default_partitioner_partition() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 6)
    for i in range(50):
        key = f"key-{i}".encode()
        delivery = broker.produce("t", b"v", key)
        assert delivery.partition == partition_for_key(key, 6)
    offsets = [m.offset for m in broker.messages("t", 0)]
    assert offsets == list(range(len(offsets)))


def test_keyless_round_robin_and_explicit_partition() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 3)
    assert [broker.produce("t", b"v").partition for _ in range(4)] == [0, 1, 2, 0]
    assert broker.produce("t", b"v", b"k", partition=2).partition == 2


class _Listener:
    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.revoked: set[TP] = set()

    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        self.revoked |= set(revoked)
        self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        self.assigned |= set(assigned)


async def test_group_members_split_partitions_and_resume_from_commits() -> None:
    broker = MemoryBroker()
    a, b = MemoryTransport(broker, "g"), MemoryTransport(broker, "g")
    await a.ensure_topics([TopicSpec("t", 4)])
    for i in range(8):
        broker.produce("t", str(i).encode(), partition=i % 4)
    la, lb = _Listener(), _Listener()
    await a.start()
    await a.subscribe(["t"], la)
    first = await a.fetch(0.01, 100)
    assert len(first) == 8 and len(la.assigned) == 4
    await a.commit({TP("t", p): 2 for p in range(4)})
    await b.start()
    await b.subscribe(["t"], lb)
    await a.fetch(0.01, 100)
    await b.fetch(0.01, 100)
    assert la.assigned | lb.assigned == {TP("t", p) for p in range(4)}
    assert not la.assigned & lb.assigned and len(lb.assigned) == 2
    assert la.revoked == lb.assigned
    for i in range(8, 12):
        broker.produce("t", str(i).encode(), partition=i % 4)
    got_a = await a.fetch(0.01, 100)
    got_b = await b.fetch(0.01, 100)
    assert {m.partition for m in got_a} == {tp.partition for tp in la.assigned}
    assert {m.partition for m in got_b} == {tp.partition for tp in lb.assigned}
    await b.stop()
    await a.fetch(0.01, 100)
    assert len(la.assigned) == 4
    assert await a.committed(TP("t", 0)) == 2


async def test_fetch_waits_for_data_and_honours_pause() -> None:
    broker = MemoryBroker()
    t = MemoryTransport(broker, "g")
    await t.ensure_topics([TopicSpec("t", 2)])
    await t.subscribe(["t"], _Listener())
    assert await t.fetch(0.01, 10) == []
    asyncio.get_running_loop().call_later(0.02, broker.produce, "t", b"x", None, (), 0)
    got = await t.fetch(1.0, 10)
    assert [m.value for m in got] == [b"x"]
    t.pause([TP("t", 0)])
    broker.produce("t", b"y", partition=0)
    broker.produce("t", b"z", partition=1)
    assert [m.value for m in await t.fetch(0.01, 10)] == [b"z"]
    assert t.has_unfetched()
    t.resume([TP("t", 0)])
    assert [m.value for m in await t.fetch(0.01, 10)] == [b"y"]
    delivery = await (await t.send("t", b"w", partition=1))
    assert (delivery.topic, delivery.partition, delivery.offset) == ("t", 1, 1)


def test_trim_drops_only_what_every_group_committed() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    for _ in range(10):
        broker.produce("t", b"v")
    broker._commit("g1", {TP("t", 0): 6})
    broker._commit("g2", {TP("t", 0): 4})
    assert broker.trim() == 4
    assert [m.offset for m in broker.messages("t")] == list(range(4, 10))
    assert broker.produce("t", b"v").offset == 10


async def test_send_many_stores_a_run_as_records_sent_one_by_one_would_be() -> None:
    # The run goes to the broker at once (no `send` per record): the same partitions, offsets,
    # keys, headers and timestamps as the same records sent one by one, in run order.
    by_run, by_record = MemoryBroker(clock=lambda: 7), MemoryBroker(clock=lambda: 7)
    for broker in (by_run, by_record):
        broker.create_topic("t", 3)
        broker.produce("t", b"before", b"k0")
    seen: list[tuple[int, int, bytes | None]] = []
    by_run.on_produce = lambda m: seen.append((m.partition, m.offset, m.value))
    records = [
        (b"k1", b"a", (("h", b"1"),)),
        (None, b"b", ()),
        (b"k1", None, ()),
        (None, b"c", ()),
        (b"k2", b"d", (("h", b"2"), ("g", b"3"))),
    ]
    stamps = [5, None, -1, 9, None]
    delivered = await MemoryTransport(by_run, "g").send_many("t", records, stamps)
    assert (await delivered) is None
    one = MemoryTransport(by_record, "g")
    for (key, value, headers), ts in zip(records, stamps, strict=True):
        await one.send("t", value, key, headers, timestamp=ts)
    assert by_run.messages("t") == by_record.messages("t")
    assert sorted(m.timestamp for m in by_run.messages("t")) == [5, 7, 7, 7, 7, 9]
    assert seen == [
        (m.partition, m.offset, m.value)
        for value in (b"a", b"b", None, b"c", b"d")
        for m in by_run.messages("t")
        if m.value == value
    ]


async def test_send_many_to_given_partitions_stores_nothing_when_one_does_not_exist() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    transport = MemoryTransport(broker, "g")
    await transport.send_many("t", [(b"a", b"1", ()), (b"a", b"2", ())], partitions=[1, 0])
    assert [(m.partition, m.offset, m.value) for m in broker.messages("t")] == [
        (0, 0, b"2"),
        (1, 0, b"1"),
    ]
    with pytest.raises(ValueError, match="no partition 2"):
        await transport.send_many("t", [(b"a", b"3", ()), (b"a", b"4", ())], partitions=[0, 2])
    assert len(broker.messages("t")) == 2


def test_stored_messages_are_not_tracked_by_the_cycle_collector() -> None:
    # A broker keeps every message; tracked, each full collection walked all of them again
    # (half the cost per element of an aggregation's changelog, bench/bench_state.py).
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    broker.produce("t", b"v", b"k", (("h", b"1"),))
    [message] = broker.messages("t")
    assert not gc.is_tracked(message)


async def test_fetch_reads_across_sealed_chunks_and_the_tail_from_the_retained_base() -> None:
    # A partition stores sealed chunks of `_CHUNK` messages and an open tail; a fetch appends
    # its runs straight into the batch (`read_into`), whatever pieces they span.
    broker = MemoryBroker()
    t = MemoryTransport(broker, "g")
    await t.ensure_topics([TopicSpec("t", 1)])
    total = 2 * _CHUNK + 30
    for i in range(total):
        broker.produce("t", b"%d" % i, partition=0)
    part = broker._topics["t"][0]
    out: list[MemoryMessage] = [part.read(0, 1)[0]]
    assert part.read_into(out, _CHUNK - 2, _CHUNK + 3) == 5  # sealed -> sealed
    assert part.read_into(out, 2 * _CHUNK - 1, total + 99) == 31  # sealed -> tail, capped
    assert part.read_into(out, total, total + 5) == 0
    assert [m.offset for m in out] == [
        0,
        *range(_CHUNK - 2, _CHUNK + 3),
        *range(2 * _CHUNK - 1, total),
    ]
    broker._commit("g", {TP("t", 0): _CHUNK + 10})
    broker.trim()  # drops the first chunk whole and ten of the second
    broker._commit("g", {TP("t", 0): 5})  # a commit behind the retained base: read from there
    await t.subscribe(["t"], _Listener())
    got = await t.fetch(0.01, _CHUNK)
    assert [m.offset for m in got] == list(range(_CHUNK + 10, 2 * _CHUNK + 10))
    got = await t.fetch(0.01, _CHUNK)
    assert [m.value for m in got] == [b"%d" % i for i in range(2 * _CHUNK + 10, total)]


async def test_read_partition_goes_on_from_the_base_after_a_trim_mid_read() -> None:
    """Trimmed past the next chunk while the caller holds one: the read goes on from the
    first message kept to the end it saw at the start (as a consumer reset to the earliest
    does, and as `follow` does); it used to stop there, and a restore missed the rest."""
    broker = MemoryBroker()
    broker.create_topic("t", 1)
    broker.produce_many("t", [(b"k", b"%d" % i, ()) for i in range(30_000)])
    reads = MemoryTransport(broker, "g").read_partition("t", 0, 0)
    first = await anext(reads)
    assert (first[0].offset, first[-1].offset) == (0, 9_999)
    broker._commit("g", {TP("t", 0): 25_000})
    assert broker.trim() == 25_000
    rest = [m for chunk in [c async for c in reads] for m in chunk]
    assert [m.offset for m in rest] == list(range(25_000, 30_000))
