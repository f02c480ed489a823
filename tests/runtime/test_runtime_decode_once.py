"""A fused loop's input is decoded once per value: the Conductor decodes a fetched batch in
one go, and a value that does not decode sends only itself down the slow path (to be
dead-lettered), not the values around it, which are neither decoded again nor reordered."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from rtkit import Order, Running
from streamc_runtime import App, Stream, Worker
from streamc_runtime.events import Chunk
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import HANDOUT_RUN, TP

BAD = {7, 8, 63, 99}  # two adjacent, and mid-run in each partition (runs of HANDOUT_RUN)


async def test_every_value_is_decoded_once_also_in_a_batch_with_undecodable_ones() -> None:
    app = App("decode-once")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[tuple[int, float]] = []
    decoded: Counter[bytes] = Counter()
    codec = src.value_codec
    decode = codec.decode_bytes
    assert decode is not None

    def counting(data: bytes) -> Any:
        decoded[data] += 1
        return decode(data)

    codec.decode_bytes = counting

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                seen.append((int(order.amount) % 2, order.amount))

    async with Running(app) as r:
        for i in range(120):  # all there before the first fetch: one batch of both partitions
            value = b"not json %d" % i if i in BAD else {"account_id": "a", "amount": float(i)}
            r.produce("src", value, partition=i % 2, raw=i in BAD)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 60, 1: 60}
        dead = sorted(m.value or b"" for m in r.messages("decode-once-dlq"))
        state = r.worker.offsets.get(TP("src", 0))
        assert state.committable() == 60
    codec.decode_bytes = decode
    good = [i for i in range(120) if i not in BAD]
    assert {v: n for v, n in decoded.items() if not v.startswith(b"not")} == {
        b'{"account_id":"a","amount":%d.0}' % i: 1 for i in good
    }
    assert dead == sorted(b"not json %d" % i for i in BAD)
    # In offset order per partition (the partitions take turns, so only that is fixed).
    for p in (0, 1):
        assert [a for q, a in seen if q == p] == [float(i) for i in good if i % 2 == p]


class _HeldDeadLetters(MemoryTransport):
    """Dead letters' sends wait for `gate`, as a Kafka producer's may (metadata, buffer)."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.suspended = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic.endswith("-dlq"):
            self.suspended.set()
            await self.gate.wait()
        return await super().send(topic, *args, **kwargs)


async def test_a_partition_revoked_while_a_batch_dead_letters_gets_nothing_more_from_it() -> None:
    app = App("rv-chunked")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    transport = _HeldDeadLetters(broker, app.name)
    worker = Worker(app, transport, revoke_timeout=0.01, stats_interval=0)
    source = worker.source_for((nums,), "agent")
    source.chunk()  # as a fused loop straight on the source has it
    layout = [(0, b"1"), (0, b"2"), (1, b"3"), (0, b"bad"), (1, b"4"), (1, b"5"), (0, b"6")]
    for partition, value in layout:
        broker.produce("nums", value, b"k", (), partition)
    by_partition = {p: iter(broker.messages("nums", p)) for p in (0, 1)}
    batch = [next(by_partition[p]) for p, _ in layout]  # fetched in the layout's order

    dispatch = asyncio.ensure_future(worker.conductor.dispatch(batch))
    await asyncio.wait_for(transport.suspended.wait(), 5)
    await worker.on_partitions_revoked({TP("nums", 1)})
    transport.gate.set()
    await asyncio.wait_for(dispatch, 5)

    assert set(worker.offsets.partitions) == {TP("nums", 0)}
    chunks: list[Chunk] = list(source.buffer)  # type: ignore[arg-type]
    assert [
        (c.messages[0].partition, [m.offset for m in c.messages], c.values) for c in chunks
    ] == [
        (0, [0, 1], [1, 2]),
        (0, [3], [6]),
    ]
    state = worker.offsets.get(TP("nums", 0))
    assert list(state._pending) == [~0, 2, ~3]  # the run, the dead letter's hold, the run
    assert [m.value for m in broker.messages("rv-chunked-dlq")] == [b"bad"]


class _CountedReads:
    """A fetched message that counts how often its key and value are read."""

    def __init__(self, offset: int, value: bytes, reads: Counter[tuple[str, int]]) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "nums", 0, offset, 0
        self.headers: tuple[tuple[str, bytes], ...] = ()
        self._value, self._reads = value, reads

    @property
    def key(self) -> bytes:
        self._reads["key", self.offset] += 1
        return b"k"

    @property
    def value(self) -> bytes:
        self._reads["value", self.offset] += 1
        return self._value


async def test_a_batch_of_undecodable_values_is_scanned_once_not_again_after_each() -> None:
    # A poison stretch (every other value bad, as a broken producer leaves) must not make the
    # batch quadratic: after a bad value the scan goes on from the next one.
    app = App("poison")
    nums = app.topic("nums", key_type=str, value_type=int)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    worker = Worker(app, MemoryTransport(broker, app.name), stats_interval=0)
    source = worker.source_for((nums,), "agent")
    source.chunk()
    reads: Counter[tuple[str, int]] = Counter()
    batch = [_CountedReads(i, b"bad" if i % 2 else b"%d" % i, reads) for i in range(200)]

    await worker.conductor.dispatch(batch)

    chunks: list[Chunk] = list(source.buffer)  # type: ignore[arg-type]
    assert [v for c in chunks for v in c.values] == list(range(0, 200, 2))
    assert len(broker.messages("poison-dlq")) == 100
    good = {(what, i): reads[what, i] for what in ("key", "value") for i in range(0, 200, 2)}
    assert good == dict.fromkeys(good, 1)
    # A bad one is read again to be dead-lettered, the same for each wherever it is.
    assert len({reads[what, i] for what in ("key", "value") for i in range(1, 200, 2)}) == 1


async def test_a_long_run_split_into_chunks_keeps_its_values_apart_from_the_next_run() -> None:
    # A partition's run longer than `HANDOUT_RUN` is buffered as several chunks; the last one
    # holds that run's values only, not the first values of the partition after it.
    app = App("long-run")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    worker = Worker(app, MemoryTransport(broker, app.name), stats_interval=0)
    source = worker.source_for((nums,), "agent")
    source.chunk()
    for i in range(HANDOUT_RUN + 20):
        broker.produce("nums", b"%d" % i, b"k", (), 0)
    for i in range(5):
        broker.produce("nums", b"%d" % (1000 + i), b"k", (), 1)

    await worker.conductor.dispatch(broker.messages("nums", 0) + broker.messages("nums", 1))

    chunks: list[Chunk] = list(source.buffer)  # type: ignore[arg-type]
    assert [
        (c.messages[0].partition, [m.offset for m in c.messages], c.values) for c in chunks
    ] == [
        (0, list(range(HANDOUT_RUN)), list(range(HANDOUT_RUN))),
        (0, list(range(HANDOUT_RUN, HANDOUT_RUN + 20)), list(range(HANDOUT_RUN, HANDOUT_RUN + 20))),
        (1, list(range(5)), list(range(1000, 1005))),
    ]
    assert source.size == source.entered == HANDOUT_RUN + 25
