"""Delivery failures of a worker on Kafka (Tansu), in process: what aiokafka's producer raises
or reports decides between the dead-letter topic (data errors only), a retry, and a stop with
the source uncommitted.

Transport failures are injected at the aiokafka producer, with aiokafka's own error classes,
where aiokafka raises them: `send` and `partitions_for` raise `KafkaTimeoutError` when no
metadata (no leader) comes within the request timeout, and a batch that expires fails the
record futures `send` returned. Everything else (the group, commits, records) is Tansu's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from kafkatest import FAST_GROUP, Broker
from streamc_runtime import App, Record, Stream
from streamc_runtime.kafka import KafkaSettings, KafkaTransport, parse_kafka_url
from streamc_runtime.worker import Worker
from workers import committed, read_topic, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


class Order(Record, kw_only=True):
    account_id: str
    amount: float
    tags: list[str] = msgspec.field(default_factory=list)


class _InjectingTransport(KafkaTransport):
    """The Kafka transport, with `inject(producer)` run on its aiokafka producer once open."""

    def __init__(self, settings: KafkaSettings, inject: Callable[[Any], None]) -> None:
        super().__init__(settings)
        self._inject = inject

    async def _open(self) -> None:
        await super()._open()
        self._inject(self._producer)


def _transport(
    broker: Broker, group: str, inject: Callable[[Any], None] | None = None, **overrides: Any
) -> KafkaTransport:
    settings = KafkaSettings.from_env(
        parse_kafka_url(broker.url), group, {}, **{**FAST_GROUP, **overrides}
    )
    if inject is None:
        return KafkaTransport(settings)
    return _InjectingTransport(settings, inject)


async def _started(app: App, transport: KafkaTransport) -> Worker:
    worker = Worker(app,
        transport, commit_interval=0.2, stats_interval=0, send_attempts=3, send_backoff=0.05
    )
    await worker.start()
    return worker


async def _produce(
    broker: Broker, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    # Larger than any worker's limit: the source topic allows what the worker cannot produce.
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=8 << 20
    )
    await producer.start()
    try:
        for key, value, headers in records:
            await (await producer.send(topic, value, key=key, headers=headers))
    finally:
        await producer.stop()


def _order(account: str, amount: float = 1.0, tags: list[str] | None = None) -> bytes:
    return msgspec.json.encode({"account_id": account, "amount": amount, "tags": tags or []})


def _forwarding_app(name: str, op: str) -> App:
    app = App(name)
    orders = app.topic(f"{name}-orders", value_type=Order)
    out = app.topic(f"{name}-out", value_type=Order)

    @app.agent(orders)
    async def forward(stream: Stream[Order]) -> None:
        node = stream.to(out) if op == "to" else stream.group_by("account_id", topic=out)
        async for _ in node:
            pass

    return app


def _timing_out(topic: str, failures: int | None) -> tuple[Callable[[Any], None], list[int]]:
    """An injection making the producer time out on `topic` for its first `failures` calls
    (None: always), as aiokafka does while the topic has no leader; and the count of calls."""
    calls = [0]

    def failing() -> bool:
        calls[0] += 1
        return failures is None or calls[0] <= failures

    def inject(producer: Any) -> None:
        send, partitions_for = producer.send, producer.partitions_for

        async def timed_send(to: str, *args: Any, **kwargs: Any) -> Any:
            if to == topic and failing():
                raise KafkaTimeoutError("Failed to update metadata after 40.0 secs.")
            return await send(to, *args, **kwargs)

        async def timed_partitions_for(to: str) -> Any:
            if to == topic and failing():
                raise KafkaTimeoutError("Failed to update metadata after 40.0 secs.")
            return await partitions_for(to)

        producer.send, producer.partitions_for = timed_send, timed_partitions_for

    return inject, calls


@pytest.mark.parametrize("op", ["to", "group_by"])
async def test_a_producer_timeout_is_retried_and_nothing_is_dead_lettered(
    kafka_broker: Broker, names: Callable[[str], str], op: str
) -> None:
    name = names("app")
    app = _forwarding_app(name, op)
    inject, calls = _timing_out(f"{name}-out", failures=2)  # the third and last try succeeds
    worker = await _started(app, _transport(kafka_broker, name, inject))
    try:
        await _produce(
            kafka_broker, f"{name}-orders", [(b"k", _order(f"a{i}"), []) for i in range(3)]
        )
        outs = await read_topic(kafka_broker, f"{name}-out", lambda rs: len(rs) >= 3)
        await wait_committed(kafka_broker, name, f"{name}-orders", {0: 3})
    finally:
        await worker.stop()
    assert await worker.wait() == 0
    assert sorted(msgspec.json.decode(o.value or b"", type=Order).account_id for o in outs) == [
        "a0",
        "a1",
        "a2",
    ]
    assert calls[0] >= 3
    assert await read_topic(kafka_broker, f"{name}-dlq", lambda rs: True) == []


@pytest.mark.parametrize("op", ["to", "group_by"])
async def test_a_persistent_producer_timeout_stops_the_worker_with_the_offset_uncommitted(
    kafka_broker: Broker, names: Callable[[str], str], op: str
) -> None:
    name = names("app")
    app = _forwarding_app(name, op)
    inject, calls = _timing_out(f"{name}-out", failures=None)
    worker = await _started(app, _transport(kafka_broker, name, inject))
    try:
        await _produce(kafka_broker, f"{name}-orders", [(b"k", _order("a0"), [])])
        assert await asyncio.wait_for(worker.wait(), 30) == 1
    finally:
        await worker.stop()
    assert calls[0] == 3  # send_attempts
    assert isinstance(worker.failure, Exception)
    assert "KafkaTimeoutError" in repr(worker.failure.__cause__)
    assert await committed(kafka_broker, name, f"{name}-orders", 1) == {0: 0}
    assert await read_topic(kafka_broker, f"{name}-dlq", lambda rs: True) == []


def _expiring(topic: str) -> Callable[[Any], None]:
    """An injection under which every record sent to `topic` is queued for real and then
    fails, as aiokafka fails the futures of a batch that expired unsent."""

    def inject(producer: Any) -> None:
        send = producer.send

        async def expiring_send(to: str, *args: Any, **kwargs: Any) -> Any:
            queued = await send(to, *args, **kwargs)
            if to != topic:
                return queued
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def expire(_: Any) -> None:
                failed.set_exception(KafkaTimeoutError("Batch for alerts made no progress"))

            queued.add_done_callback(expire)
            return failed

        producer.send = expiring_send

    return inject


async def test_a_failed_hook_send_keeps_its_source_uncommitted_until_the_worker_stops(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    name = names("app")
    app = App(name)
    orders = app.topic(f"{name}-orders", value_type=Order)
    alerts = app.topic(f"{name}-alerts", value_type=Order)

    async def alert(order: Order) -> Order:
        await alerts.send(order)  # the delivery is not awaited: the flush must catch it
        return order

    @app.agent(orders)
    async def watch(stream: Stream[Order]) -> None:
        async for _ in stream.process(alert):
            pass

    worker = await _started(app, _transport(kafka_broker, name, _expiring(f"{name}-alerts")))
    try:
        await _produce(
            kafka_broker, f"{name}-orders", [(b"k", _order(f"a{i}"), []) for i in range(3)]
        )
        assert await asyncio.wait_for(worker.wait(), 30) == 1
    finally:
        await worker.stop()
    assert await committed(kafka_broker, name, f"{name}-orders", 1) == {0: 0}


async def test_a_message_over_the_producer_limit_is_dead_lettered_truncated_and_committed_past(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    name = names("app")
    app = _forwarding_app(name, "to")
    big = _order("big", tags=["x" * (1 << 20)])  # over aiokafka's default max_request_size
    worker = await _started(app, _transport(kafka_broker, name))
    try:
        await _produce(
            kafka_broker,
            f"{name}-orders",
            [
                (b"k0", _order("a0"), []),
                (b"k-big", big, [("trace", b"t-1")]),
                (b"k2", _order("a2"), []),
            ],
        )
        dead = await read_topic(kafka_broker, f"{name}-dlq", lambda rs: len(rs) >= 1)
        outs = await read_topic(kafka_broker, f"{name}-out", lambda rs: len(rs) >= 2)
        await wait_committed(kafka_broker, name, f"{name}-orders", {0: 3})
        assert worker.failure is None
    finally:
        await worker.stop()
    assert await worker.wait() == 0
    assert [o.key for o in outs] == [b"k0", b"k2"]
    (letter,) = dead
    headers = dict(letter.headers)
    assert letter.key == b"k-big"
    assert headers["trace"] == b"t-1"
    assert headers["streamc.truncated"] == b"true"
    assert headers["streamc.original.size"] == str(len(big)).encode()
    assert headers["streamc.source.topic"] == f"{name}-orders".encode()
    assert headers["streamc.source.offset"] == b"1"
    assert headers["streamc.error.type"].endswith(b"RecordTooLargeError")
    assert letter.value is not None and len(letter.value) > 1_000_000
    assert big.startswith(letter.value)
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        letter.key, letter.value, list(letter.headers)
    )
    assert size <= 1_048_576
