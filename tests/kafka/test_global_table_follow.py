"""A global table on the real broker follows its topic with one group-less consumer for the
worker's life (`KafkaTransport.follow`), not a consumer started per partition per poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from aiokafka.consumer import fetcher  # type: ignore[import-untyped]
from kafkatest import FAST_GROUP, Broker, open_transport, wait_until
from streamc_runtime import App, Record, Stream, kafka, kafka_read
from streamc_runtime.kafka import KafkaTransport
from streamc_runtime.kafka_records import lean_consumer_class
from streamc_runtime.transport import TopicSpec
from streamc_runtime.worker import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

TABLE_PARTITIONS = 4


class Account(Record, kw_only=True):
    account_id: str
    tier: str


class Order(Record, kw_only=True):
    account_id: str


def global_join_app(names: Callable[[str], str]) -> App:
    """Orders joined with a global table over `accounts` (4 partitions)."""
    app = App(names("app"))
    orders = app.topic(names("orders"), key_type=str, value_type=Order, partitions=2)
    accounts = app.topic(
        names("accounts"), key_type=str, value_type=Account, partitions=TABLE_PARTITIONS
    )
    table = app.table(
        "accounts_by_id", key_type=str, value_type=Account, source=accounts, global_=True
    )

    @app.agent(orders, name="tiers")
    async def tiers(stream: Stream[Order]) -> None:
        async for _ in stream.join(table):
            pass

    return app


def count_group_less_consumers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every consumer the Kafka transport makes comes from `lean_consumer_class()`; the ones
    without a group are the reads outside the group: here, only the global table's."""
    base = lean_consumer_class()
    made: list[Any] = []

    class Counted(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("group_id") is None:
                made.append(self)
            super().__init__(*args, **kwargs)

    for module in (kafka, kafka_read):  # the group's consumer, the group-less readers
        monkeypatch.setattr(module, "lean_consumer_class", lambda: Counted)
    return made


def _account(key: str, tier: str) -> bytes:
    return msgspec.json.encode(Account(account_id=key, tier=tier))


async def test_a_global_table_follows_its_topic_with_one_consumer_and_sees_updates(
    kafka_broker: Broker, names: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = global_join_app(names)
    accounts = names("accounts")
    keys = [f"a{i}" for i in range(8)]
    async with open_transport(kafka_broker, names("producer")) as producer:
        await producer.ensure_topics([TopicSpec(accounts, TABLE_PARTITIONS)])
        await producer.send_many(accounts, [(k.encode(), _account(k, "basic"), ()) for k in keys])
        await producer.flush()
        made = count_group_less_consumers(monkeypatch)
        transport = KafkaTransport.from_url(kafka_broker.url, group_id=names("g"), **FAST_GROUP)
        worker = Worker(app, transport, stats_interval=0)
        await worker.start()
        try:
            await wait_until(
                lambda: len(worker.table("accounts_by_id")) == len(keys), 30, "the first read"
            )
            for i, key in enumerate(("a1", "a6", "a1")):  # updates while the worker runs
                await producer.send_many(accounts, [(key.encode(), _account(key, f"t{i}"), ())])
                await producer.flush()

                def applied(key: str = key, tier: str = f"t{i}") -> bool:
                    return worker.table("accounts_by_id")[key].tier == tier

                sent = time.monotonic()
                await wait_until(applied, 30, f"update {i} of {key}")
                # A figure, not an assertion (pytest -s): the wait polls every 50 ms.
                print(f"update {i} applied {time.monotonic() - sent:.3f}s after its flush")
            assert {k: a.tier for k, a in worker.table("accounts_by_id").items()} == {
                **dict.fromkeys(keys, "basic"),
                "a1": "t2",
                "a6": "t1",
            }
            assert len(made) == 1  # one follow consumer for every partition, for its life
            assert made[0].assignment() == {
                kafka.TopicPartition(accounts, p) for p in range(TABLE_PARTITIONS)
            }
        finally:
            await worker.stop()
        assert made[0]._closed is True  # the stop ended the follow and stopped its consumer


async def test_a_global_table_over_a_topic_with_more_partitions_than_declared_holds_every_row(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    app = global_join_app(names)
    accounts = names("accounts")
    extra = TABLE_PARTITIONS + 2  # the topic exists already, with more partitions
    async with open_transport(kafka_broker, names("producer")) as producer:
        await producer.ensure_topics([TopicSpec(accounts, extra)])
        await producer.send_many(
            accounts,
            [(f"a{p}".encode(), _account(f"a{p}", f"t{p}"), ()) for p in range(extra)],
            partitions=list(range(extra)),
        )
        await producer.flush()
        transport = KafkaTransport.from_url(kafka_broker.url, group_id=names("g"), **FAST_GROUP)
        worker = Worker(app, transport, stats_interval=0)
        await worker.start()
        try:
            await wait_until(
                lambda: len(worker.table("accounts_by_id")) == extra, 30, "every partition's row"
            )
            assert {k: a.tier for k, a in worker.table("accounts_by_id").items()} == {
                f"a{p}": f"t{p}" for p in range(extra)
            }
        finally:
            await worker.stop()


async def test_follow_hands_out_what_the_topic_held_then_says_caught_up_then_hands_out_news(
    kafka_broker: Broker, names: Callable[[str], str]
) -> None:
    topic = names("log")
    # The default fetch wait: a follow's consumer keeps it (a fetch returns at a record).
    async with open_transport(kafka_broker, names("g"), fetch_max_wait_ms=500) as t:
        await t.ensure_topics([TopicSpec(topic, 3)])
        await t.send_many(
            topic, [(b"k", f"v{i}".encode(), ()) for i in range(3)], partitions=[1] * 3
        )
        await t.flush()
        follow = t.follow(topic, {0: 0, 1: 1, 2: 0})
        try:
            began = time.monotonic()
            got: list[tuple[int, int]] = []
            async for batch in follow:
                if not batch:
                    break
                got.extend((m.partition, m.offset) for m in batch)
            # Only partitions 0 and 2 have nothing: a figure, how long their end took to show.
            print(f"caught up {time.monotonic() - began:.3f}s after the start")
            assert got == [(1, 1), (1, 2)]
            await t.send_many(topic, [(b"k", b"new", ())], partitions=[2])
            await t.flush()
            sent = time.monotonic()
            batch = await asyncio.wait_for(anext(follow), 10)
            print(f"a new record handed out {time.monotonic() - sent:.3f}s after its flush")
            assert [(m.partition, m.offset, m.value) for m in batch] == [(2, 0, b"new")]
        finally:
            await follow.aclose()


async def test_follow_fetches_with_the_short_wait_until_caught_up_then_with_the_consumers(
    kafka_broker: Broker, names: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty topic: a broker holds each fetch to the end of its wait, so a catch-up fetching
    # with `fetch_max_wait_ms` (500) kept the table from being ready that long.
    waits: list[int] = []
    real = fetcher.FetchRequest

    def recorded(max_wait_ms: int, *args: Any, **kwargs: Any) -> Any:
        waits.append(max_wait_ms)
        return real(max_wait_ms, *args, **kwargs)

    monkeypatch.setattr(fetcher, "FetchRequest", recorded)
    topic = names("empty")
    async with open_transport(kafka_broker, names("g"), fetch_max_wait_ms=500) as t:
        await t.ensure_topics([TopicSpec(topic, 3)])
        follow = t.follow(topic, dict.fromkeys(range(3), 0))
        try:
            assert await asyncio.wait_for(anext(follow), 10) == ()
            # Until caught up, read_partition's `_RESTORE_POLL_MS`. (The fetcher, a task of its
            # own, may build its next fetch between the yield and this line: with the new wait.)
            assert waits[0] == 20
            caught_up_at = waits.index(500) if 500 in waits else len(waits)
            assert set(waits[:caught_up_at]) == {20}
            await t.send_many(topic, [(b"k", b"new", ())], partitions=[0])
            await t.flush()
            batch = await asyncio.wait_for(anext(follow), 10)
            assert [(m.partition, m.offset, m.value) for m in batch] == [(0, 0, b"new")]
            # Every fetch built after the switch has the consumer's wait.
            await wait_until(lambda: len(waits) > caught_up_at, 10, "a fetch after the catch-up")
            assert set(waits[caught_up_at:]) == {500}
        finally:
            await follow.aclose()
