"""The in-memory broker behaves like Kafka where the runtime can tell."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection

from aiokafka.partitioner import murmur2 as aiokafka_murmur2  # type: ignore[import-untyped]
from streamc_runtime.memory import MemoryBroker, MemoryTransport, murmur2, partition_for_key
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
