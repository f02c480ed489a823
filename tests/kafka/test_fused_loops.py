"""A fused agent loop (`Stream.runs()`, what generated agents iterate) on a real broker: a hook
raising in the middle of a run dead-letters that element only, the rest of the run goes out in
order, and the group commits exactly to the end of the input."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from kafkatest import FAST_GROUP, Broker, RecordingListener, open_transport, wait_until
from streamc_runtime import App, Record, Stream, Worker
from streamc_runtime.kafka import KafkaTransport
from streamc_runtime.transport import Message, TopicSpec
from workers import committed

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

N = 120  # more than one hand-out run (50)
BAD = 37


class Order(Record, kw_only=True):
    n: int


async def _read(broker: Broker, group: str, topic: str, count: int) -> list[Message]:
    async with open_transport(broker, group) as t:
        await t.subscribe([topic], RecordingListener())
        got: list[Message] = []
        deadline = time.monotonic() + 30
        while len(got) < count:
            assert time.monotonic() < deadline, f"{topic}: {len(got)} of {count} records"
            got.extend(await t.fetch(0.2, 500))
        return got


async def test_a_raising_hook_in_a_fused_loop_dead_letters_one_and_commits_all_on_kafka(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    app = App(names("app"))
    orders = app.topic(names("orders"), key_type=str, value_type=Order, partitions=1)
    out = app.topic(names("out"), key_type=str, value_type=Order, partitions=1)

    def double(order: Order) -> Order:
        if order.n == BAD:
            raise ValueError("bad order")
        return Order(n=order.n * 2)

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                order = double(order)
                run.send(out, order)

    async with open_transport(kafka_broker, names("admin")) as admin:
        await admin.ensure_topics([TopicSpec(t.name, t.partitions) for t in app.topics.values()])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for n in range(N):
            await producer.send(orders.name, b'{"n":%d}' % n, key=b"k%d" % n)
        await producer.flush()
    finally:
        await producer.stop()

    transport = KafkaTransport.from_url(kafka_broker.url, group_id=app.name, **FAST_GROUP)
    worker = Worker(app, transport, commit_interval=0.5, stats_interval=0)
    await worker.start()
    try:
        await wait_until(
            lambda: (worker.sent >= N - 1 and worker.dead_letters >= 1) or not worker.running,
            60,
            "the output",
        )
        assert worker.running, worker.failure
    finally:
        await worker.stop()
    assert worker.failure is None
    assert await committed(kafka_broker, app.name, orders.name, 1) == {0: N}

    got = await _read(kafka_broker, names("read-out"), out.name, N - 1)
    assert [m.key for m in got] == [b"k%d" % n for n in range(N) if n != BAD]
    assert [m.value for m in got] == [b'{"n":%d}' % (2 * n) for n in range(N) if n != BAD]
    (dead,) = await _read(kafka_broker, names("read-dlq"), app.dlq.name, 1)
    assert (dead.key, dead.value) == (b"k%d" % BAD, b'{"n":%d}' % BAD)
    assert dict(dead.headers)["streamc.source.offset"] == b"%d" % BAD
