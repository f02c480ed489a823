"""`KafkaTransport.read_partition` on the real broker: one partition, outside the consumer
group, from an offset to the high watermark its fetches report (a table's changelog restore)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from kafkatest import Broker, open_transport
from streamc_runtime.kafka import KafkaTransport, KafkaTransportError
from streamc_runtime.kafka_records import KafkaRecord
from streamc_runtime.transport import Message, TopicSpec

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def read(t: KafkaTransport, topic: str, partition: int, start: int) -> list[Message]:
    got: list[Message] = []
    async for batch in t.read_partition(topic, partition, start):
        got.extend(batch)
    return got


async def fill(t: KafkaTransport, topic: str, partition: int, count: int) -> None:
    records = [(f"k{i}".encode(), f"v{i}".encode(), ()) for i in range(count)]
    await t.send_many(topic, records, partitions=[partition] * count)
    await t.flush()


async def test_reads_a_partition_to_its_end_and_from_any_offset(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("log")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 3)])
        # More than one fetch holds: Tansu's end_offsets would be short of the real end.
        await fill(t, topic, 1, 5000)
        await fill(t, topic, 2, 7)
        whole = await read(t, topic, 1, 0)
        assert {type(m) for m in whole} == {KafkaRecord}  # the lean records (kafka_records.py)
        assert [(m.partition, m.offset, m.key) for m in whole] == [
            (1, i, f"k{i}".encode()) for i in range(5000)
        ]
        tail = await read(t, topic, 1, 4990)
        assert [m.offset for m in tail] == list(range(4990, 5000))
        assert [m.value for m in await read(t, topic, 2, 0)] == [f"v{i}".encode() for i in range(7)]


async def test_an_empty_partition_or_one_read_to_its_end_ends_at_once(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("log")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 2)])
        await fill(t, topic, 1, 3)
        for partition, start in ((0, 0), (1, 3)):
            began = time.monotonic()
            assert await asyncio.wait_for(read(t, topic, partition, start), 10) == []
            # Caught up as soon as a fetch reports the high watermark, not after a whole
            # `getmany` timeout waiting for records that will not come. How soon is a figure
            # for a benchmark, not an assertion here: the time is printed (pytest -s).
            print(f"partition {partition} from {start}: {time.monotonic() - began:.3f}s")
        # and a partition read to its end still ends only at its end
        assert [m.offset for m in await read(t, topic, 1, 1)] == [1, 2]


async def test_a_partition_the_topic_does_not_have_is_an_error_not_a_wait(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    """A changelog created earlier with fewer partitions than the table has now: the restore
    of a missing partition must fail, not wait for ever (the table would never be ready)."""
    topic = names("log")
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 2)])
        with pytest.raises(KafkaTransportError, match=r"has no partition 3"):
            await asyncio.wait_for(read(t, topic, 3, 0), 20)


async def test_a_reader_cancelled_while_it_closes_its_consumer_ends_cancelled(
    kafka_broker: Broker, names: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's consumer stop awaits its own cancelled fetch task inside
    `suppress(CancelledError)`: a cancel of the reader landing there was swallowed, and the
    reader went on as if never cancelled (a global table's follower, which reads every
    partition's end again and again, then never ended and the worker's stop waited for it
    for ever)."""
    from aiokafka.consumer.fetcher import Fetcher

    topic = names("log")
    closing = asyncio.Event()
    close = Fetcher.close

    async def close_noticed(self: Fetcher) -> None:
        closing.set()
        await close(self)  # suspends first where aiokafka suppresses CancelledError

    monkeypatch.setattr(Fetcher, "close", close_noticed)
    async with open_transport(kafka_broker, names("g")) as t:
        await t.ensure_topics([TopicSpec(topic, 1)])
        await fill(t, topic, 0, 3)
        reader = asyncio.ensure_future(read(t, topic, 0, 0))
        await asyncio.wait_for(closing.wait(), 20)  # read to the end: closing its consumer
        reader.cancel()
        await asyncio.wait({reader}, timeout=20)
        assert reader.cancelled(), f"the reader went on: {reader.result()!r}"
