"""The Kafka transport's `send_many`, on a stand-in producer: no broker.

aiokafka's `AIOKafkaProducer.send` refuses a record larger than `max_request_size` before it
queues anything, so a `group_by`/`through` element whose encoded value is too large is
dead-lettered and the worker goes on. `send_many` must refuse it the same way, before queuing
any of the run and naming the records: queued in a batch of its own, the broker would refuse
the whole batch (MESSAGE_TOO_LARGE, not retriable), the run's delivery would fail and the worker
stop, and restarted it would read the same message and stop again (a poison pill). Records
without a key go where aiokafka's default partitioner puts them: a partition with a leader.
`send` gives a keyed record the partition that partitioner would (its hash cached per key).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError  # type: ignore[import-untyped]
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from streamc_runtime.kafka import KafkaRecordTooLargeError, KafkaSettings, KafkaTransport

pytestmark = pytest.mark.asyncio


class _Producer:
    """AIOKafkaProducer's batch API and its `send`, whose size check is aiokafka's own
    (`AIOKafkaProducer._serialize`, default `max_request_size`)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._max_request_size = 1048576  # aiokafka's default
        self.queued: list[tuple[str, int, Any]] = []  # (kind, partition, builder or value)
        self._message_accumulator = None  # no batch is ever reused: irrelevant here

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(
        self, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued.append(("batch", partition, builder))
        return asyncio.shield(fut)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self._max_request_size:  # exactly what AIOKafkaProducer._serialize does
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued.append(("send", partition or 0, value))
        return fut


async def test_send_many_refuses_a_record_aiokafkas_send_would_refuse() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _Producer(batch_size=t.settings.max_batch_size)
    t._producer = producer
    huge = b"x" * (2 << 20)  # 2 MiB: over aiokafka's max_request_size and Kafka's max.message.bytes
    ok = (b"k", b"small", ())
    # Refused like `t.send` refuses it, before any of the run is queued, naming which records
    # (so the forwarding task dead-letters those and sends the rest).
    with pytest.raises(KafkaRecordTooLargeError) as refused:
        await t.send_many("t", [ok, (b"k", huge, ()), ok, (None, huge, [("h", b"v")])])
    assert refused.value.indexes == (1, 3)
    assert producer.queued == []
    # Just under the limit still goes (the exact size is aiokafka's own estimate).
    limit = producer._max_request_size
    size = limit - DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", b"", [])
    while DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", b"x" * size, []) > limit:
        size -= 1  # the length varints grow with the value: a few bytes
    fits = b"x" * size
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", fits, []) > limit - 8
    await t.send_many("t", [(b"k", fits, ())])
    assert [kind for kind, _, _ in producer.queued] == ["batch"]


async def test_send_refuses_the_same_record_before_queueing_it() -> None:
    """The behaviour `send_many` departs from: `send` (and so `Worker.forward`) raises."""
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _Producer(batch_size=t.settings.max_batch_size)
    t._producer = producer
    with pytest.raises(KafkaRecordTooLargeError) as refused:  # a data error, as send_many's
        await t.send("t", b"x" * (2 << 20), b"k")
    assert isinstance(refused.value.__cause__, MessageSizeTooLargeError)
    assert (refused.value.indexes, refused.value.limit) == ((0,), 1048576)
    assert producer.queued == []


class _PartlyAvailable(_Producer):
    """Four partitions, of which only partition 2 has a leader right now (aiokafka's
    `cluster.available_partitions_for_topic`): its default partitioner sends an unkeyed
    record to an available partition, so it is not stuck behind a leaderless one."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size)
        cluster = type("Cluster", (), {"available_partitions_for_topic": lambda s, t: {2}})()
        self.client = type("Client", (), {"cluster": cluster})()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


async def test_send_many_sends_unkeyed_records_to_available_partitions_as_aiokafka_does() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _PartlyAvailable(batch_size=t.settings.max_batch_size)
    t._producer = producer
    await t.send_many("t", [(None, str(i).encode(), ()) for i in range(40)])
    assert {partition for _, partition, _ in producer.queued} == {2}


class _Recording(_Producer):
    """Records the partition `send` was given (None: aiokafka's partitioner would pick)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size)
        self.partitions: list[int | None] = []
        cluster = type("Cluster", (), {"partitions_for_topic": lambda s, t: {0, 1, 2, 3}})()
        self.client = type("Client", (), {"cluster": cluster})()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        self.partitions.append(partition)
        return await super().send(
            topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms, headers=headers
        )


async def test_send_gives_a_keyed_record_the_partition_kafkas_default_partitioner_picks() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _Recording(batch_size=t.settings.max_batch_size)
    t._producer = producer
    t._cluster = producer.client.cluster  # as `start` takes it from the real producer
    keys = [f"acct-{i:04d}".encode() for i in range(40)] * 2
    for key in keys:
        await t.send("t", b"v", key)
    await t.send("t", b"v", None)  # no key: aiokafka picks one with a leader
    await t.send("t", b"v", b"acct-0001", partition=3)  # an explicit one is kept
    kafkas = DefaultPartitioner()
    expected = [kafkas(key, [0, 1, 2, 3], [0, 1, 2, 3]) for key in keys]
    assert len(set(expected)) == 4
    assert producer.partitions == [*expected, None, 3]


class _FourPartitions(_Producer):
    """Four partitions, all with a leader; each builder remembers the keys appended to it."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size)
        cluster = type(
            "Cluster", (), {"available_partitions_for_topic": lambda s, t: {0, 1, 2, 3}}
        )()
        self.client = type("Client", (), {"cluster": cluster})()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> BatchBuilder:
        builder = super().create_batch()
        builder.keys = []
        append = builder.append

        def keyed(*, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> Any:
            builder.keys.append(key)
            return append(timestamp=timestamp, key=key, value=value, headers=headers)

        builder.append = keyed
        return builder


async def test_send_many_partitions_keys_as_kafka_does_hashing_each_distinct_key_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamc_runtime.kafka_send as kafka_send_module

    hashed: list[bytes] = []
    partition_for_key = kafka_send_module.partition_for_key

    def counting(key: bytes, count: int) -> int:
        hashed.append(key)
        return partition_for_key(key, count)

    monkeypatch.setattr(kafka_send_module, "partition_for_key", counting)
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _FourPartitions(batch_size=t.settings.max_batch_size)
    t._producer = producer
    keys = [f"acct-{i:04d}".encode() for i in range(40)]
    for _ in range(3):  # three runs: the keys repeat within and across them
        await t.send_many("t", [(key, b"v", ()) for key in keys * 2])
    kafkas = DefaultPartitioner()
    placed = [(key, partition) for _, partition, builder in producer.queued for key in builder.keys]
    assert len(placed) == 240
    assert {(key, kafkas(key, [0, 1, 2, 3], [0, 1, 2, 3])) for key in keys} == set(placed)
    assert len({partition for _, partition in placed}) == 4
    assert sorted(hashed) == sorted(keys)  # each key hashed once, not once per record


async def test_send_many_partitions_keys_as_kafka_does_past_its_cache_of_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamc_runtime.kafka_send as kafka_send_module

    monkeypatch.setattr(kafka_send_module, "_KEY_PARTITIONS_MAX", 5)  # the cache starts again
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _FourPartitions(batch_size=t.settings.max_batch_size)
    t._producer = producer
    keys = [f"acct-{i:04d}".encode() for i in range(40)]
    for i in range(0, 40, 4):
        await t.send_many("t", [(key, b"v", ()) for key in keys[i : i + 4]])
    assert len(t._key_partitions[4]) < 5 + 4  # bounded: started again before a run past 5
    await t.send_many("t", [(key, b"v", ()) for key in keys])
    kafkas = DefaultPartitioner()
    placed = [(key, partition) for _, partition, builder in producer.queued for key in builder.keys]
    assert len(placed) == 80
    assert {(key, kafkas(key, [0, 1, 2, 3], [0, 1, 2, 3])) for key in keys} == set(placed)
