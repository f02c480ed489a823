"""The Kafka transport's delivery bookkeeping, on a stand-in producer: no broker needed.

`send` returns aiokafka's own record future (no wrapper per record) and collects failures from
those futures in bulk; `flush` must still raise for every record sent before it that was not
stored, whether or not anyone awaited its future.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from aiokafka.producer.message_accumulator import (  # type: ignore[import-untyped]
    BatchBuilder,
    MessageAccumulator,
)
from aiokafka.producer.transaction_manager import (  # type: ignore[import-untyped]
    TransactionManager,
)
from aiokafka.record.default_records import DefaultRecordBatch  # type: ignore[import-untyped]
from aiokafka.structs import RecordMetadata, TopicPartition  # type: ignore[import-untyped]
from streamc_runtime import kafka_send as kafka_send_module
from streamc_runtime.kafka import (
    KafkaDeliveryError,
    KafkaRecordTooLargeError,
    KafkaSettings,
    KafkaTransport,
)
from streamc_runtime.memory import partition_for_key

pytestmark = pytest.mark.asyncio


class FakeProducer:
    """Queues a future per record; the test resolves them as the broker would."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    async def flush(self) -> None:
        if self.futures:
            await asyncio.wait(self.futures)

    async def stop(self) -> None:
        return None


def transport() -> tuple[KafkaTransport, FakeProducer]:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = FakeProducer()
    t._producer = producer
    return t, producer


def stored(fut: asyncio.Future[Any], offset: int) -> None:
    fut.set_result(RecordMetadata("t", 0, None, offset, -1, 0, 0))


async def test_send_returns_the_record_future_and_flush_raises_unawaited_failures() -> None:
    t, producer = transport()
    first = await t.send("t", b"1")
    second = await t.send("t", b"2")
    assert first is producer.futures[0]  # no wrapper future per record
    stored(producer.futures[0], 7)
    producer.futures[1].set_exception(ConnectionError("broker went away"))
    assert (await first).offset == 7  # a Delivery: topic, partition, offset
    with pytest.raises(KafkaDeliveryError, match="1 record\\(s\\) could not be produced"):
        await t.flush()
    assert second.done()
    await t.flush()  # reported once


async def test_failures_survive_bulk_settling_until_the_flush() -> None:
    t, producer = transport()
    every = kafka_send_module._SETTLE_EVERY
    for i in range(every * 4):
        await t.send("t", b"x")
        fut = producer.futures[i]
        if i == 5:
            fut.set_exception(ConnectionError("lost"))
        else:
            stored(fut, i)
        # resolved futures do not pile up between flushes
        assert len(t._unsettled) <= every
    with pytest.raises(KafkaDeliveryError, match="lost"):
        await t.flush()
    assert not t._unsettled
    await t.flush()


async def test_an_unresolved_send_keeps_later_ones_until_it_resolves() -> None:
    t, producer = transport()
    every = kafka_send_module._SETTLE_EVERY
    for i in range(every * 3):
        await t.send("t", b"x")
        if i != 1:  # the second record waits, as a slow batch would
            fut = producer.futures[i]
            if i == every * 2:
                fut.set_exception(ConnectionError("lost behind a slow one"))
            else:
                stored(fut, i)
    assert len(t._unsettled) == every * 3 - 1  # the first one went
    stored(producer.futures[1], 1)
    with pytest.raises(KafkaDeliveryError, match="lost behind a slow one"):
        await t.flush()
    assert not t._unsettled


# -- send_many: runs of records in aiokafka batch builders -----------------------------------


class _Submitted:
    """One thing handed to the producer for a partition: a batch, or a single `send`."""

    def __init__(
        self,
        partition: int,
        future: asyncio.Future[Any],
        builder: BatchBuilder | None = None,
        single: tuple[bytes | None, bytes | None] | None = None,
    ) -> None:
        self.partition = partition
        self.future = future
        self.builder = builder
        self.single = single


class BatchProducer:
    """Stands in for AIOKafkaProducer's batch API with aiokafka's real `BatchBuilder`: a
    submitted builder stays open (more records may be appended to it) until the test drains
    it, which builds and so closes it, as aiokafka's sender does. Like aiokafka, `send_batch`
    hands out a shield of the batch future."""

    def __init__(
        self,
        partitions: frozenset[int] = frozenset({0, 1, 2, 3}),
        batch_size: int = 1024,
    ) -> None:
        self.partitions = partitions
        self.batch_size = batch_size
        self.queue: list[_Submitted] = []  # in submission order
        # What send_many reads to tell whether aiokafka still queues a batch: per partition,
        # the batches not drained yet (aiokafka's accumulator keeps `MessageBatch`es there,
        # each holding its builder as `_builder`).
        self._message_accumulator = SimpleNamespace(_batches={})

    async def partitions_for(self, topic: str) -> set[int]:
        return set(self.partitions)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(
        self, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        assert partition in self.partitions
        assert not builder.closed()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append(_Submitted(partition, fut, builder=builder))
        queued = self._message_accumulator._batches
        queued.setdefault(TopicPartition(topic, partition), deque()).append(
            SimpleNamespace(_builder=builder)
        )
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
        assert partition in self.partitions
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append(_Submitted(partition, fut, single=(key, value)))
        return fut

    def batches(self, partition: int | None = None) -> list[_Submitted]:
        return [
            s
            for s in self.queue
            if s.builder is not None and (partition is None or s.partition == partition)
        ]

    def drain(self, partition: int | None = None) -> None:
        """What aiokafka's sender does to a queued batch: build it, which closes it."""
        for s in self.batches(partition):
            s.builder._build()  # type: ignore[union-attr]
        queued = self._message_accumulator._batches
        for tp in list(queued):
            if partition is None or tp.partition == partition:
                del queued[tp]

    def records(self, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        """(key, value) of every record queued for `partition`, in the order the broker gets
        them: batch after batch, each read back from its built bytes."""
        out: list[tuple[bytes | None, bytes | None]] = []
        for s in self.queue:
            if s.partition != partition:
                continue
            if s.single is not None:
                out.append(s.single)
            else:
                assert s.builder is not None
                out.extend((r.key, r.value) for r in built(s.builder))
        return out

    async def flush(self) -> None:
        self.drain()
        for s in self.queue:
            if not s.future.done():
                s.future.set_result(RecordMetadata("t", s.partition, None, 0, -1, 0, 0))

    async def stop(self) -> None:
        return None


def built(builder: BatchBuilder) -> list[Any]:
    return list(DefaultRecordBatch(bytes(builder._build())))


def batch_transport(**kwargs: Any) -> tuple[KafkaTransport, BatchProducer]:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = BatchProducer(**kwargs)
    t._producer = producer
    return t, producer


def batch_stored(s: _Submitted) -> None:
    s.future.set_result(RecordMetadata("t", s.partition, None, 0, -1, 0, 0))


async def test_send_many_partitions_keys_as_aiokafkas_default_partitioner() -> None:
    t, producer = batch_transport(batch_size=1 << 20)
    parts = sorted(producer.partitions)
    keys = [f"key-{i}".encode() for i in range(300)] + [b"", b"\xff" * 7]
    records = [(k, b"v" + k, [("h", k)]) for k in keys]
    await t.send_many("t", [*records, (None, b"no key", ())])
    producer.drain()
    where: dict[bytes | None, int] = {}
    for s in producer.queue:
        assert s.builder is not None
        for r in built(s.builder):
            assert r.value == b"v" + r.key if r.key is not None else r.value == b"no key"
            if r.key is not None:
                assert r.headers == [("h", r.key)]
            where[r.key] = s.partition
    partitioner = DefaultPartitioner()
    assert {k: where[k] for k in keys} == {k: partitioner(k, parts, parts) for k in keys}
    assert where[None] in producer.partitions
    assert len(where) == len(keys) + 1  # every record exactly once
    assert len({s.partition for s in producer.queue}) == len(parts)  # a spread, really


async def test_send_many_keeps_order_per_partition_across_runs_and_full_batches() -> None:
    t, producer = batch_transport(batch_size=1024)
    keys = [b"a", b"b", b"c", b"d", b"e"]
    sent: list[tuple[bytes, bytes]] = []
    for run in range(6):
        records = []
        for i in range(40):
            key = keys[(run * 7 + i) % len(keys)]
            value = f"{run}:{i}:".encode() + b"x" * 60
            records.append((key, value, ()))
            sent.append((key, value))
        await t.send_many("t", records)
        if run in (1, 4):
            producer.drain(0)  # some partitions' batches go while others keep filling
        if run == 3:
            producer.drain()
    producer.drain()
    for p in producer.partitions:
        expected = [r for r in sent if partition_for_key(r[0], len(producer.partitions)) == p]
        assert producer.records(p) == expected
    per_partition = [len(producer.batches(p)) for p in sorted(producer.partitions)]
    assert min(n for n in per_partition if n) > 2  # full batches forced new ones
    for s in producer.queue:  # none went past the batch size but by a lone record
        assert s.builder is not None
        assert s.builder.size() <= 1024


async def test_a_later_run_fills_the_open_batch_until_it_is_drained() -> None:
    t, producer = batch_transport(batch_size=1 << 16)
    await t.send_many("t", [(b"k", b"1", ())])
    await t.send_many("t", [(b"k", b"2", ()), (b"k", b"3", ())])
    (first,) = producer.queue  # one send_batch: the second run went into the open batch
    assert first.builder is not None
    assert first.builder.record_count() == 3
    p = first.partition
    producer.drain(p)
    await t.send_many("t", [(b"k", b"4", ())])
    assert len(producer.queue) == 2
    second = producer.queue[1]
    assert second.builder is not None
    assert second.builder is not first.builder
    assert second.partition == p
    assert [v for _, v in producer.records(p)] == [b"1", b"2", b"3", b"4"]
    assert t._open_batches["t"][p][0] is second.builder


async def test_records_added_to_an_open_batch_keep_their_order_times_and_headers() -> None:
    # A changelog's runs (explicit partitions, as `send_changelog` sends them) go into the
    # partition's open batch until it is full: each record is read back from the built bytes
    # with its own offset in the batch, timestamp, key, value and headers; a full batch is
    # closed and the next record starts a new one.
    t, producer = batch_transport(batch_size=400)
    sent = []
    for run in range(3):
        records = []
        for i in range(4):
            n = run * 4 + i
            records.append((b"k%d" % n, b"v" * 30, [("streamc.position", b"in:0:%d" % n)]))
        stamps = [1_000 + run * 4 + i for i in range(4)]
        await t.send_many("t", records, stamps, partitions=[2] * 4)
        sent += [(k, v, h, ts) for (k, v, h), ts in zip(records, stamps, strict=True)]
    batches = producer.batches(2)
    assert len(batches) > 1  # the first batch filled up
    assert all(s.partition == 2 for s in producer.queue)
    assert batches[0].builder is not None
    assert batches[0].builder.closed()  # full: closed as aiokafka's own append closes it
    assert batches[-1].builder is not None
    assert not batches[-1].builder.closed()  # open: the next run may still add to it
    read = []
    for s in batches:
        assert s.builder is not None
        records = built(s.builder)
        assert [r.offset for r in records] == list(range(len(records)))
        read += [(r.key, r.value, r.headers, r.timestamp) for r in records]
    assert read == sent


class TakingProducer(BatchProducer):
    """aiokafka's sender takes the second batch submitted while `send_batch` is awaited (it
    is drained, not built yet: its builder is still open)."""

    async def send_batch(
        self, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        fut = await super().send_batch(builder, topic, partition=partition)
        if len(self.queue) == 2:
            del self._message_accumulator._batches[TopicPartition(topic, partition)]
        return fut


async def test_a_batch_taken_while_it_was_submitted_takes_no_later_record_of_the_run() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = TakingProducer(batch_size=300)
    t._producer = producer
    values = [b"%d" % i + b"v" * 60 for i in range(5)]
    await t.send_many("t", [(b"k", v, ()) for v in values], partitions=[1] * 5)
    first, second, *rest = producer.batches(1)
    assert first.builder is not None and second.builder is not None
    full = first.builder.record_count()
    assert 1 < full < 4  # the first batch filled up
    assert second.builder.record_count() == 1  # taken: nothing was added after its record
    assert [v for _, v in producer.records(1)] == values
    assert len(rest) == 1


async def test_an_oversized_record_goes_alone_and_the_open_batch_takes_nothing_after_it() -> None:
    # aiokafka's builder takes any record into an empty batch, so a record larger than the
    # batch size is sent in a batch of its own; the batch before it must stay as it was.
    t, producer = batch_transport(batch_size=1024)
    big = b"B" * 4000
    await t.send_many("t", [(b"k", b"1", ()), (b"k", big, ()), (b"k", b"3", ())])
    await t.send_many("t", [(b"k", b"4", ())])
    p = producer.queue[0].partition
    assert [[r.value for r in built(s.builder)] for s in producer.batches(p)] == [  # type: ignore[arg-type]
        [b"1"],
        [big],
        [b"3", b"4"],
    ]
    assert [v for _, v in producer.records(p)] == [b"1", big, b"3", b"4"]


async def test_send_many_sends_a_header_that_has_no_value() -> None:
    # Kafka allows a header with no value (aiokafka reads one as None): a consumed record
    # carrying one is forwarded with it, as Kafka allows, near the size limit or not.
    t, producer = batch_transport(batch_size=1 << 21)
    near = b"n" * (kafka_send_module._MAX_REQUEST_SIZE - 200)
    records = [
        (b"k", b"1", (("trace", None), ("streamc.position", b"in:0:3"))),
        (b"k", near, [("trace", None)]),
    ]
    await t.send_many("t", records, partitions=[0, 0])
    (batch,) = producer.batches(0)
    assert batch.builder is not None
    assert [(r.value, r.headers) for r in built(batch.builder)] == [
        (b"1", [("trace", None), ("streamc.position", b"in:0:3")]),
        (near, [("trace", None)]),
    ]


async def test_a_fused_loops_size_check_takes_a_header_that_has_no_value() -> None:
    # `refuse_too_large` is the per-record check of a fused loop's sends: a forwarded record
    # with a header of no value passes it, and one too large is still refused.
    t, _ = batch_transport(batch_size=1 << 21)
    t.refuse_too_large(b"k", b"1", (("trace", None), ("streamc.position", b"in:0:3")))
    huge = b"n" * (kafka_send_module._MAX_REQUEST_SIZE + 1)
    with pytest.raises(KafkaRecordTooLargeError):
        t.refuse_too_large(b"k", huge, [("trace", None)])


async def test_send_many_resolves_when_every_batch_it_touched_is_stored() -> None:
    t, producer = batch_transport(batch_size=1 << 16)
    k0, k1 = _keys_on_two_partitions(producer)
    await t.send_many("t", [(k0, b"old", ())])  # an earlier run's batch, still in flight
    delivery = asyncio.ensure_future(t.send_many("t", [(k0, b"a", ()), (k1, b"b", ())]))
    awaitable = await delivery
    done = asyncio.ensure_future(_wait(awaitable))
    first, second = producer.queue
    batch_stored(second)
    await _spin()
    assert not done.done()  # the run's first record shares the earlier batch
    batch_stored(first)
    await asyncio.wait_for(done, 1)
    await t.flush()


async def test_send_many_raises_when_one_of_its_batches_fails_and_flush_reports_it() -> None:
    t, producer = batch_transport(batch_size=1 << 16)
    k0, k1 = _keys_on_two_partitions(producer)
    awaitable = await t.send_many("t", [(k0, b"a", ()), (k1, b"b", ())])
    first, second = producer.queue
    batch_stored(first)
    second.future.set_exception(ConnectionError("partition leader gone"))
    with pytest.raises(ConnectionError, match="partition leader gone"):
        await awaitable
    with pytest.raises(KafkaDeliveryError, match="partition leader gone"):
        await t.flush()
    await t.flush()  # reported once


class _FailingFlushProducer(BatchProducer):
    """Fails every queued batch within its flush, as aiokafka does when a batch fails: the
    flush returns as the batch futures resolve, before the shields handed out resolve."""

    async def flush(self) -> None:
        self.drain()
        for s in self.queue:
            if not s.future.done():
                s.future.set_exception(ConnectionError("batch expired"))


async def test_flush_raises_for_a_failed_batch_nobody_awaited_behind_its_shield() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = _FailingFlushProducer()
    t._producer = producer
    await t.send_many("t", [(b"k", b"1", ())])
    (submitted,) = producer.queue
    assert not submitted.future.done()
    with pytest.raises(KafkaDeliveryError, match="batch expired"):
        await t.flush()
    assert not t._unsettled
    await t.flush()


def _keys_on_two_partitions(producer: BatchProducer) -> tuple[bytes, bytes]:
    n = len(producer.partitions)
    k0 = b"key-0"
    k1 = next(
        k
        for k in (f"key-{i}".encode() for i in range(1, 100))
        if partition_for_key(k, n) != partition_for_key(k0, n)
    )
    return k0, k1


async def _wait(awaitable: Any) -> Any:
    return await awaitable


async def _spin() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class _OneBrokerCluster:
    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 0


class AccumulatorProducer:
    """aiokafka's own `MessageAccumulator` and idempotence `TransactionManager` behind the
    batch API, as AIOKafkaProducer wires them; the test plays the sender, whose drain (which
    takes a batch and assigns its sequence numbers) and build (in the produce request's own
    task, one loop step later) are two steps."""

    def __init__(self) -> None:
        self.txn = TransactionManager(None, 60000)
        self.txn.set_pid_and_epoch(1, 0)
        self.accumulator = MessageAccumulator(
            _OneBrokerCluster(), 1 << 16, 0, 30, txn_manager=self.txn
        )
        self._message_accumulator = self.accumulator  # where send_many looks, as on aiokafka's

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return self.accumulator.create_builder()

    async def send_batch(
        self, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        return await self.accumulator.add_batch(builder, TopicPartition(topic, partition), 1)


async def test_send_many_adds_nothing_to_a_batch_aiokafka_has_drained() -> None:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    producer = AccumulatorProducer()
    t._producer = producer
    accumulator = producer.accumulator
    await t.send_many("t", [(b"k", b"1", ()), (b"k", b"2", ())])
    (first,) = accumulator.drain_by_nodes(ignore_nodes=set())[0][0].values()  # sender's step
    # The forwarding task runs before the produce request's task builds the drained batch.
    await t.send_many("t", [(b"k", b"3", ())])
    built = [first.get_data_buffer()]  # the produce request's task
    await t.send_many("t", [(b"k", b"4", ())])
    (second,) = accumulator.drain_by_nodes(ignore_nodes=set())[0][0].values()
    built.append(second.get_data_buffer())
    # What the broker gets: each record once, in order, with consecutive sequence numbers
    # (an idempotent producer's batch must start where the partition's last batch ended).
    sequenced = []
    for data in built:
        batch = DefaultRecordBatch(bytes(data))
        sequenced += [(batch.base_sequence + i, r.value) for i, r in enumerate(batch)]
    assert sequenced == [(0, b"1"), (1, b"2"), (2, b"3"), (3, b"4")]
