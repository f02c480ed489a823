"""The Kafka transport's delivery bookkeeping, on a stand-in producer: no broker needed.

`send` returns aiokafka's own record future (no wrapper per record) and collects failures from
those futures in bulk; `flush` must still raise for every record sent before it that was not
stored, whether or not anyone awaited its future.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.structs import RecordMetadata  # type: ignore[import-untyped]
from streamc_runtime import kafka as kafka_module
from streamc_runtime.kafka import KafkaDeliveryError, KafkaSettings, KafkaTransport

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
    every = kafka_module._SETTLE_EVERY
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
    every = kafka_module._SETTLE_EVERY
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
