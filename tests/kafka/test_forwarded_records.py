"""Forwarding on a real broker: what aiokafka's `send` (echo, to) and batch builders (group_by,
through) write. A value no hook touched arrives as its producer's bytes; every forwarded record
keeps its input's timestamp, and a `take` batch the latest of its members'."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from kafkatest import FAST_GROUP, Broker, RecordingListener, open_transport, wait_until
from streamc_runtime import App, Record, Stream, Worker
from streamc_runtime.kafka import KafkaTransport
from streamc_runtime.transport import Message, TopicSpec

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


class Order(Record, kw_only=True):
    id: str
    account_id: str
    currency: str = "EUR"


# A v2 producer's orders: "v2" is not declared, "currency" left to its default. The timestamps
# are out of order, as a producer's may be.
INPUTS = [
    (b"o1", b'{"id":"o1","account_id":"a","v2":1}', 1_700_000_005_000),
    (b"o2", b'{"id":"o2","account_id":"a","v2":2}', 1_700_000_001_000),
    (b"o3", b'{"id":"o3","account_id":"a","v2":3}', 1_700_000_003_000),
]


async def _read(broker: Broker, group: str, topic: str, count: int) -> list[Message]:
    async with open_transport(broker, group) as t:
        listener = RecordingListener()
        await t.subscribe([topic], listener)
        got: list[Message] = []
        deadline = time.monotonic() + 30
        while len(got) < count:
            assert time.monotonic() < deadline, f"{topic}: {len(got)} of {count} records"
            got.extend(await t.fetch(0.2, 500))
        return got


async def test_forwarded_records_keep_the_producers_bytes_and_timestamps_on_kafka(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    app = App(names("app"))
    orders = app.topic(names("orders"), key_type=str, value_type=Order, partitions=2)
    echoed = app.topic(names("echoed"), key_type=str, value_type=Order, partitions=2)
    repart = app.topic(names("repart"), key_type=str, value_type=Order, partitions=2)
    copies = app.topic(names("copies"), key_type=str, value_type=Order, partitions=2)
    batches = app.topic(names("batches"), key_type=str, value_type=list[Order], partitions=2)

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for _ in (
            stream.echo(echoed)
            .group_by(lambda o: o.account_id, topic=repart)
            .through(copies)
            .take(3, within=2.0)
            .to(batches)
        ):
            pass

    async with open_transport(kafka_broker, names("admin")) as admin:
        await admin.ensure_topics([TopicSpec(t.name, t.partitions) for t in app.topics.values()])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for key, value, stamp in INPUTS:
            await producer.send_and_wait(orders.name, value, key=key, timestamp_ms=stamp)
    finally:
        await producer.stop()

    transport = KafkaTransport.from_url(kafka_broker.url, group_id=app.name, **FAST_GROUP)
    worker = Worker(app, transport, commit_interval=0.5, stats_interval=0)
    await worker.start()
    try:
        await wait_until(lambda: worker.sent >= 10 or not worker.running, 60, "the batch")
        assert worker.running, worker.failure
    finally:
        await worker.stop()
    assert worker.failure is None

    rekeyed = [b"a"] * 3
    for topic, keys in ((echoed, [b"o1", b"o2", b"o3"]), (repart, rekeyed), (copies, rekeyed)):
        got = await _read(kafka_broker, names(f"read-{topic.name}"), topic.name, 3)
        assert sorted(m.key for m in got) == keys, topic.name
        assert sorted((m.value, m.timestamp) for m in got) == [(v, ts) for _, v, ts in INPUTS]
    (batch,) = await _read(kafka_broker, names("read-batches"), batches.name, 1)
    assert batch.key == b"a"
    assert batch.timestamp == 1_700_000_005_000  # the latest of its members'
    # written from the records: declared defaults in, undeclared fields out
    decoded = batches.value_codec.decode(batch.value)
    assert sorted(o.id for o in decoded) == ["o1", "o2", "o3"]
    assert b'"currency":"EUR"' in (batch.value or b"") and b"v2" not in (batch.value or b"")
