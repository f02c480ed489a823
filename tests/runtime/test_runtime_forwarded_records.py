"""What forwarding writes: a value no hook can have changed goes out as the producer's own bytes
(fields the record does not declare survive, defaults the producer left out are not added); a
value after a `process` step or a `take` batch is encoded from the record. Every forwarded
record keeps its input message's timestamp; a batch carries the latest of its members'."""

from __future__ import annotations

from typing import Any

from rtkit import Order, Running
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryBroker

# A v2 producer's order: a field the Order record does not declare, and none of its defaults.
V2 = b'{"account_id":"a","amount":1.5,"v2":{"channel":"app"}}'
BROKER_NOW = 999_999_000  # the broker's clock: what a record without a kept timestamp gets


def _broker() -> MemoryBroker:
    return MemoryBroker(clock=lambda: BROKER_NOW)


def _order_topics(app: App, *names: str) -> list[Any]:
    return [app.topic(n, key_type=str, value_type=Order, partitions=2) for n in names]


async def test_through_echo_to_and_group_by_forward_the_producers_bytes_unchanged() -> None:
    app = App("raw")
    orders, echoed, repart, copies, final = _order_topics(
        app, "orders", "echoed", "raw-a-orders-account_id-repartition", "copies", "final"
    )

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for _ in (
            stream.echo(echoed)
            .filter(lambda o: o.amount > 0)
            .group_by(lambda o: o.account_id, topic=repart)
            .through(copies)
            .to(final)
        ):
            pass

    async with Running(app, _broker()) as r:
        r.produce("orders", V2, key="k", raw=True)
        await r.idle()
    for topic in ("echoed", repart.name, "copies", "final"):
        assert [m.value for m in r.messages(topic)] == [V2], topic
    assert r.messages("raw-dlq") == []


async def test_a_record_changed_in_place_by_a_processor_is_encoded_not_forwarded_stale() -> None:
    app = App("changed")
    orders, echoed, copies = _order_topics(app, "orders", "echoed", "copies")

    def set_language(order: Order) -> Order:
        order.language = "nl"  # the same object, changed: its original bytes are stale
        return order

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for _ in stream.process(set_language).echo(echoed).through(copies):
            pass

    async with Running(app, _broker()) as r:
        r.produce("orders", V2, key="k", raw=True)
        await r.idle()
    # Encoded from the record: the change is there, the undeclared field is gone and the
    # declared defaults are written out.
    encoded = b'{"account_id":"a","amount":1.5,"language":"nl","tags":[]}'
    assert [m.value for m in r.messages("echoed")] == [encoded]
    assert [m.value for m in r.messages("copies")] == [encoded]


async def test_a_take_batch_is_encoded_from_its_records() -> None:
    app = App("batch")
    (orders,) = _order_topics(app, "orders")
    batches = app.topic("batches", key_type=str, value_type=list[Order], partitions=2)

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for _ in stream.take(2).to(batches):
            pass

    async with Running(app, _broker()) as r:
        r.produce("orders", V2, key="k", raw=True, partition=0)
        r.produce("orders", V2, key="k", raw=True, partition=0)
        await r.idle()
    one = b'{"account_id":"a","amount":1.5,"language":null,"tags":[]}'
    assert [m.value for m in r.messages("batches")] == [b"[" + one + b"," + one + b"]"]


async def test_forwarded_records_keep_their_input_timestamp_and_a_batch_its_latest() -> None:
    app = App("ts")
    orders, echoed, repart, copies = _order_topics(
        app, "orders", "echoed", "ts-a-orders-account_id-repartition", "copies"
    )
    batches = app.topic("batches", key_type=str, value_type=list[Order], partitions=2)

    def double(order: Order) -> Order:
        order.amount *= 2
        return order

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for _ in (
            stream.echo(echoed)
            .group_by(lambda o: o.account_id, topic=repart)
            .process(double)
            .through(copies)
            .take(3)
            .to(batches)
        ):
            pass

    broker = _broker()
    r = Running(app, broker)
    stamps = [5_000, 2_000, 3_000]  # out of order: a batch takes the latest, not the last
    for i, stamp in enumerate(stamps):
        value = b'{"account_id":"a","amount":%d}' % i
        broker.produce("orders", value, b"k", (), 0, stamp)
    async with r:
        await r.idle()
    for topic in ("echoed", repart.name, "copies"):
        assert [m.timestamp for m in r.messages(topic)] == stamps, topic
    assert [m.timestamp for m in r.messages("batches")] == [5_000]
    ((batch,),) = [r.values("batches", list[Order])]
    assert [o.amount for o in batch] == [0.0, 2.0, 4.0]
