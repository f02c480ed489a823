"""Stream semantics, black-box: apps written as generated code would write them, on the memory
broker. Mirrors (and goes beyond) Faust's own stream tests."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from typing import Any

import msgspec
import pytest
from rtkit import Order, Running, wait_for
from streamc_runtime import App, Event, Stream, Worker
from streamc_runtime.memory import partition_for_key
from streamc_runtime.transport import TP


def _ints_app(partitions: int = 1) -> tuple[App, Any]:
    app = App("t")
    topic = app.topic("nums", key_type=str, value_type=int, partitions=partitions)
    return app, topic


async def test_ordered_delivery() -> None:
    app, nums = _ints_app()
    got: list[int] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for value in stream:
            got.append(value)

    async with Running(app) as r:
        for i in range(200):
            r.produce("nums", i)
        await r.idle()
    assert got == list(range(200))


async def test_every_event_acked_after_advance_and_at_stop() -> None:
    app, nums = _ints_app()
    events: list[Event[str, int]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for event in stream.events():
            events.append(event)

    async with Running(app) as r:
        for i in range(20):
            r.produce("nums", i, key="k")
        await r.idle()
        # waiting for the next event means it finished the last one: all acked, count 0
        assert all(e.acked for e in events)
        state = r.worker.offsets.get(TP("nums", 0))
        assert all(state.refs(e.message.offset) == 0 for e in events)
        assert state.committable() == 20
    assert r.committed("nums") == {0: 20}
    assert [e.key for e in events] == ["k"] * 20
    m = events[3].message
    assert (m.topic, m.partition, m.offset, m.key, m.value) == ("nums", 0, 3, b"k", b"3")


async def test_manual_ack_and_async_with() -> None:
    app, nums = _ints_app()
    acked_inside: list[bool] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for event in stream.events():
            if event.value % 2:
                await event.ack()
                acked_inside.append(event.acked)
            else:
                async with event:
                    acked_inside.append(event.acked)
                acked_inside.append(event.acked)

    async with Running(app) as r:
        for i in range(4):
            r.produce("nums", i)
        await r.idle()
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 4
    assert acked_inside == [False, True, True, False, True, True]


async def test_exception_in_body_dead_letters_acks_and_continues() -> None:
    app, nums = _ints_app()
    got: list[int] = []
    calls = 0

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        nonlocal calls
        calls += 1
        async for value in stream:
            if value == 3:
                raise ValueError("three is bad")
            got.append(value)

    async with Running(app) as r:
        for i in range(6):
            r.produce("nums", i, key="k3", headers=[("trace", b"abc")])
        await r.idle()
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 6
    assert got == [0, 1, 2, 4, 5]
    assert calls == 2
    (dead,) = r.messages("t-dlq")
    headers = dict(dead.headers)
    assert dead.value == b"3" and dead.key == b"k3"
    assert headers["trace"] == b"abc"
    assert headers["streamc.error"] == b"three is bad"
    assert headers["streamc.error.type"] == b"ValueError"
    assert headers["streamc.source.topic"] == b"nums"
    assert headers["streamc.source.partition"] == b"0"
    assert headers["streamc.source.offset"] == b"3"
    assert headers["streamc.agent"] == b"collect"
    assert r.worker.dead_letters == 1
    assert r.committed("nums") == {0: 6}


async def test_take_within_full_batches_then_rest() -> None:
    app, nums = _ints_app()
    batches: list[list[int]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for batch in stream.take(10, within=5.0):
            batches.append(batch)

    async with Running(app) as r:
        for i in range(9):
            r.produce("nums", i)
        await r.idle()
        assert batches == []
        await asyncio.sleep(0.05)
        for i in range(9, 20):
            r.produce("nums", i)
        await r.idle()
        assert batches == [list(range(10)), list(range(10, 20))]
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 20


async def test_take_within_emits_partial_batch_in_time_and_never_empty() -> None:
    app, nums = _ints_app()
    batches: list[tuple[float, list[int]]] = []
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for batch in stream.take(100, within=0.1):
            batches.append((loop.time(), batch))
            await gate.wait()

    async with Running(app) as r:
        start = loop.time()
        for i in range(3):
            r.produce("nums", i)
        await wait_for(lambda: len(batches) == 1)
        assert batches[0][1] == [0, 1, 2]
        assert 0.09 <= batches[0][0] - start < 0.5
        # the batch's events are acked only once the agent has handled the batch
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 0
        gate.set()
        await asyncio.sleep(0.35)  # several `within` periods with no data: no empty batch
        assert len(batches) == 1
        r.produce("nums", 3)
        await wait_for(lambda: len(batches) == 2)
        await r.idle()
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 4
    assert batches[1][1] == [3]
    assert r.committed("nums") == {0: 4}


async def test_stopping_mid_batch_hands_over_and_acks_the_buffer() -> None:
    app, nums = _ints_app()
    batches: list[list[int]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for batch in stream.take(10):
            batches.append(batch)

    async with Running(app) as r:
        for i in range(14):
            r.produce("nums", i)
        await r.idle()
        assert batches == [list(range(10))]
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 10
    assert batches == [list(range(10)), [10, 11, 12, 13]]
    assert r.committed("nums") == {0: 14}


async def test_processors_in_order_sync_and_async() -> None:
    app = App("t")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)
    got: list[Order] = []

    def default_language(o: Order) -> Order:
        if not o.language:
            o.language = "US"
        return o

    async def tag(o: Order) -> Order:
        await asyncio.sleep(0)
        o.tags.append(o.language or "?")
        return o

    @app.agent(orders)
    async def collect(stream: Stream[Order]) -> None:
        async for order in stream.process(default_language, tag):
            got.append(order)

    async with Running(app) as r:
        r.produce("orders", {"account_id": "a", "amount": 1}, partition=0)
        r.produce("orders", {"account_id": "b", "amount": 2, "language": "FR"}, partition=0)
        await r.idle()
    assert [(o.language, o.tags) for o in got] == [("US", ["US"]), ("FR", ["FR"])]


async def test_raising_processor_and_filter_dead_letter_and_continue() -> None:
    app, nums = _ints_app()
    got: list[int] = []

    def check(v: int) -> int:
        if v == 2:
            raise RuntimeError("bad processor")
        return v * 10

    async def keep(v: int) -> bool:
        if v == 40:
            raise KeyError("bad filter")
        return v != 10

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for value in stream.process(check).filter(keep):
            got.append(value)

    async with Running(app) as r:
        for i in range(6):
            r.produce("nums", i)
        await r.idle()
    assert got == [0, 30, 50]
    errors = [dict(m.headers)["streamc.error.type"] for m in r.messages("t-dlq")]
    assert errors == [b"RuntimeError", b"KeyError"]
    assert r.committed("nums") == {0: 6}


async def test_enumerate_and_items() -> None:
    app, nums = _ints_app()
    got: list[tuple[int, Any]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for i, (key, value) in stream.items().enumerate(5):
            got.append((i, (key, value)))

    async with Running(app) as r:
        r.produce("nums", 7, key="a")
        r.produce("nums", 8)
        await r.idle()
    assert got == [(5, ("a", 7)), (6, (None, 8))]


async def test_through_and_echo_keep_key_and_headers() -> None:
    app = App("t")
    src = app.topic("src", key_type=str, value_type=Order, partitions=3)
    mid = app.topic("mid", key_type=str, value_type=Order, partitions=2)
    copy1 = app.topic("copy1", key_type=str, value_type=Order, partitions=1)
    copy2 = app.topic("copy2", key_type=str, value_type=Order, partitions=4)
    got: list[tuple[str, Order]] = []

    @app.agent(src)
    async def collect(stream: Stream[Order]) -> None:
        async for event in stream.through(mid).echo(copy1, copy2).events():
            got.append((event.key, event.value))
            assert event.message.topic == "mid"

    async with Running(app) as r:
        r.produce("src", {"account_id": "a", "amount": 1}, key="ka", headers=[("h", b"1")])
        r.produce("src", {"account_id": "b", "amount": 2}, key="kb", headers=[("h", b"2")])
        await r.idle()
    assert sorted(k for k, _ in got) == ["ka", "kb"]
    for topic in ("mid", "copy1", "copy2"):
        out = {m.key: m for m in r.messages(topic)}
        assert set(out) == {b"ka", b"kb"}
        assert dict(out[b"ka"].headers) == {"h": b"1"}
        n = r.broker.partitions_for(topic) or 1
        assert out[b"kb"].partition == partition_for_key(b"kb", n)
    assert r.committed("src") == {p: n for p, n in r.end_offsets("src").items()}


async def test_to_sends_every_value() -> None:
    app, nums = _ints_app()
    out = app.topic("out", key_type=str, value_type=int, partitions=1)

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        async for _ in stream.process(lambda v: v + 1).to(out):
            pass

    async with Running(app) as r:
        for i in range(3):
            r.produce("nums", i, key=f"k{i}")
        await r.idle()
    assert [(m.key, m.value) for m in r.messages("out")] == [
        (b"k0", b"1"),
        (b"k1", b"2"),
        (b"k2", b"3"),
    ]


@pytest.mark.parametrize("by", ["field", "async_fn", "sync_fn"])
async def test_group_by_rekeys_to_the_right_partition(by: str) -> None:
    app = App("g")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=3)
    repart = app.topic(
        "g-collect-orders-account_id-repartition",
        key_type=str,
        value_type=Order,
        partitions=4,
        internal=True,
    )
    got: list[tuple[str, Order, int]] = []

    async def account_async(o: Order) -> str:
        await asyncio.sleep(0)
        return o.account_id

    key: Any = {"field": "account_id", "async_fn": account_async}.get(by, lambda o: o.account_id)

    @app.agent(orders)
    async def collect(stream: Stream[Order]) -> None:
        async for event in stream.group_by(key, topic=repart).events():
            got.append((event.key, event.value, event.message.partition))

    async with Running(app) as r:
        for i in range(12):
            r.produce(
                "orders",
                {"account_id": f"acct-{i % 5}", "amount": i},
                key=f"o{i}",
                headers=[("trace", str(i).encode())],
            )
        await r.idle()
    assert len(got) == 12
    for m in r.messages(repart.name):
        (trace,) = [v for k, v in m.headers if k == "trace"]
        assert msgspec.json.decode(m.value or b"", type=Order).amount == int(trace)
    for k, order, partition in got:
        assert k == order.account_id
        assert partition == partition_for_key(k.encode(), 4)
    assert r.committed("orders") == r.end_offsets("orders")
    assert r.committed(repart.name) == r.end_offsets(repart.name)


async def test_raising_key_function_dead_letters() -> None:
    app = App("g")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    repart = app.topic("g-a-orders-x-repartition", key_type=str, value_type=Order, partitions=2)
    got: list[Order] = []

    def key_of(o: Order) -> str:
        if o.amount < 0:
            raise ValueError("negative")
        return o.account_id

    @app.agent(orders, name="a")
    async def collect(stream: Stream[Order]) -> None:
        async for order in stream.group_by(key_of, topic=repart):
            got.append(order)

    async with Running(app) as r:
        r.produce("orders", {"account_id": "x", "amount": 1})
        r.produce("orders", {"account_id": "y", "amount": -1})
        r.produce("orders", {"account_id": "z", "amount": 2})
        await r.idle()
    assert sorted(o.account_id for o in got) == ["x", "z"]
    (dead,) = r.messages("g-dlq")
    assert dict(dead.headers)["streamc.error"] == b"negative"
    assert dict(dead.headers)["streamc.agent"] == b"a"
    assert r.committed("orders") == {0: 3}


async def test_body_restart_resumes_memoized_chain_after_failed_batch() -> None:
    app = App("g")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    repart = app.topic("g-a-orders-account_id-repartition", key_type=str, value_type=Order)
    batches: list[list[float]] = []
    nodes: list[Any] = []

    @app.agent(orders, name="a")
    async def collect(stream: Stream[Order]) -> None:
        chain = stream.group_by(lambda o: o.account_id, topic=repart).take(2)
        nodes.append(chain)
        async for batch in chain:
            if any(o.amount == 3 for o in batch):
                raise RuntimeError("bad batch")
            batches.append([o.amount for o in batch])

    async with Running(app) as r:
        for i in range(6):
            r.produce("orders", {"account_id": "a", "amount": i})
        await r.idle()
    assert batches == [[0, 1], [4, 5]]
    assert len(nodes) == 2 and nodes[0] is nodes[1]
    # group_by forwards the input's own bytes (no hook changed them)
    assert [m.value for m in r.messages("g-dlq")] == [
        b'{"account_id":"a","amount":2}',
        b'{"account_id":"a","amount":3}',
    ]
    assert r.committed(repart.name) == {0: 6}


async def test_a_stream_has_one_downstream() -> None:
    app, nums = _ints_app()
    errors: list[str] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        stream.take(3)
        try:
            stream.enumerate()
        except ValueError as exc:
            errors.append(str(exc))
        async for _ in stream.take(3):
            pass

    async with Running(app) as r:
        await r.idle()
    assert len(errors) == 1 and "take" in errors[0]


async def test_join_delivers_from_every_topic() -> None:
    app = App("j")
    a = app.topic("a", key_type=str, value_type=int, partitions=2)
    b = app.topic("b", key_type=str, value_type=int, partitions=1)
    c = app.topic("c", key_type=str, value_type=int, partitions=1)
    got: list[tuple[str, int]] = []

    @app.agent(a & b & c)
    async def collect(stream: Stream[int]) -> None:
        async for event in stream.events():
            got.append((event.message.topic, event.value))

    async with Running(app) as r:
        r.produce("a", 1)
        r.produce("b", 2)
        r.produce("c", 3)
        r.produce("a", 4)
        await r.idle()
    assert sorted(got) == [("a", 1), ("a", 4), ("b", 2), ("c", 3)]


async def test_several_agents_each_get_every_message_refcount_per_agent() -> None:
    app = App("m")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    refs: list[int] = []
    got: dict[str, list[Order]] = {"a": [], "b": []}
    release = asyncio.Event()

    @app.agent(orders, name="a")
    async def agent_a(stream: Stream[Order]) -> None:
        async for event in stream.events():
            refs.append(event._offsets.refs(event.message.offset))
            event.value.tags.append("seen by a")
            got["a"].append(event.value)
            await release.wait()

    @app.agent(orders, name="b")
    async def agent_b(stream: Stream[Order]) -> None:
        async for order in stream:
            await release.wait()
            got["b"].append(order)

    async with Running(app) as r:
        r.produce("orders", {"account_id": "x", "amount": 1})
        await wait_for(lambda: bool(refs))
        assert refs == [2]  # set once, to the number of subscribed agents
        state = r.worker.offsets.get(TP("orders", 0))
        assert state.committable() == 0  # both agents still hold their current element
        release.set()
        await r.idle()
        assert state.committable() == 1
    assert [o.account_id for o in got["a"]] == ["x"] == [o.account_id for o in got["b"]]
    assert got["b"][0].tags == []  # each agent decodes its own copy of a record
    assert r.committed("orders") == {0: 1}


async def test_decode_failure_dead_letters_once_and_acks_for_every_subscriber() -> None:
    app = App("m")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    got: list[str] = []

    @app.agent(orders, name="a")
    async def agent_a(stream: Stream[Order]) -> None:
        async for order in stream:
            got.append("a" + order.account_id)

    @app.agent(orders, name="b")
    async def agent_b(stream: Stream[Order]) -> None:
        async for order in stream:
            got.append("b" + order.account_id)

    async with Running(app) as r:
        r.produce("orders", b"{not json", raw=True)
        r.produce("orders", {"account_id": 5, "amount": 1})
        r.produce("orders", {"account_id": "ok", "amount": 1})
        await r.idle()
        assert r.worker.offsets.get(TP("orders", 0)).committable() == 3
    assert sorted(got) == ["aok", "bok"]
    dead = r.messages("m-dlq")
    assert [m.value for m in dead] == [b"{not json", b'{"account_id":5,"amount":1}']
    assert dict(dead[0].headers)["streamc.agent"] == b"a,b"
    assert b"account_id" in dict(dead[1].headers)["streamc.error"]
    assert r.committed("orders") == {0: 3}


async def test_forward_holds_the_source_until_delivered() -> None:
    from streamc_runtime.memory import MemoryTransport

    class SlowTransport(MemoryTransport):
        """Deliveries resolve only when the test says so."""

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.results: list[tuple[asyncio.Future[Any], Any]] = []

        async def send(
            self,
            topic: str,
            value: Any,
            key: Any = None,
            headers: Any = (),
            partition: Any = None,
            timestamp: Any = None,
        ) -> Any:
            done = await super().send(topic, value, key, headers, partition, timestamp)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.results.append((fut, await done))
            return fut

    app, nums = _ints_app()
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        async for _ in stream.echo(out):
            pass

    r = Running(app)
    slow = SlowTransport(r.broker, app.name)
    r.transport = slow
    r.worker = Worker(app, slow, stats_interval=0, commit_interval=60)
    async with r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle()
        state = r.worker.offsets.get(TP("nums", 0))
        # the agent moved past 0 and 1, but their copies are not durable yet
        assert state.committable() == 0
        results = slow.results
        results[1][0].set_result(results[1][1])
        await asyncio.sleep(0)
        assert state.committable() == 0
        results[0][0].set_result(results[0][1])
        await asyncio.sleep(0)
        assert state.committable() == 2
        results[2][0].set_result(results[2][1])
    assert r.committed("nums") == {0: 3}


async def test_stream_built_after_an_await_is_subscribed_late() -> None:
    app = App("late")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)
    repart = app.topic("late-a-orders-account_id-repartition", key_type=str, value_type=Order)
    got: list[str] = []

    @app.agent(orders, name="a")
    async def collect(stream: Stream[Order]) -> None:
        await asyncio.sleep(0.05)  # the chain (and its repartition topic) appears after start
        async for order in stream.group_by("account_id", topic=repart):
            got.append(order.account_id)

    async with Running(app, fetch_timeout=0.01) as r:
        r.produce("orders", {"account_id": "x", "amount": 1})
        await wait_for(lambda: got == ["x"])
    assert r.committed(repart.name) == {0: 1}


async def test_hooks_can_send_to_a_topic_while_running() -> None:
    app, nums = _ints_app()
    out = app.topic("out", key_type=str, value_type=int)

    async def sink(value: int) -> None:
        delivery = await out.send(value * 2, key="k", headers=[("h", b"v")])
        await delivery

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for value in stream:
            await sink(value)

    async with Running(app) as r:
        r.produce("nums", 21)
        await r.idle()
    (m,) = r.messages("out")
    assert (m.key, m.value, m.headers) == (b"k", b"42", (("h", b"v"),))
    with pytest.raises(RuntimeError, match="not running"):
        await out.send(1)


async def test_batches_forward_with_their_shared_key() -> None:
    app, nums = _ints_app()
    out = app.topic("out", key_type=str, value_type=list[int])

    @app.agent(nums)
    async def batches(stream: Stream[int]) -> None:
        async for _ in stream.take(2).to(out):
            pass

    async with Running(app) as r:
        for i, key in enumerate(["a", "a", "a", "b"]):
            r.produce("nums", i, key=key)
        await r.idle()
    assert [(m.key, m.value) for m in r.messages("out")] == [(b"a", b"[0,1]"), (None, b"[2,3]")]
    assert r.worker.offsets.get(TP("nums", 0)).committable() == 4


async def test_sync_hooks_returning_awaitables_are_awaited_every_time() -> None:
    """A sync hook's result is awaited when it is awaitable, even after the same hook has
    returned plain values (results are checked by type, and generators are never assumed
    plain: a `types.coroutine` generator is awaitable)."""
    app = App("aw")
    numbers = app.topic("numbers", value_type=int)
    got: list[Any] = []

    async def double(v: int) -> int:
        await asyncio.sleep(0)
        return v * 2

    @types.coroutine
    def triple(v: int) -> Generator[None, None, int]:
        yield None
        return v * 3

    def plain(v: int) -> Any:
        return v

    def wrapping(v: int) -> Any:
        # plain value, coroutine, plain value, `types.coroutine` generator, plain value
        return [plain, double, plain, triple, plain][v % 5](v)

    @app.agent(numbers)
    async def collect(stream: Stream[int]) -> None:
        async for value in stream.process(wrapping).filter(lambda v: plain(v) >= 0):
            got.append(value)

    async with Running(app) as r:
        for v in range(10):
            r.produce("numbers", v, partition=0)
        await r.idle()
    assert got == [0, 2, 2, 9, 4, 5, 12, 7, 24, 9]
