"""The committable offset never passes a message still in flight — forwards, batches and
dead letters stay in flight until their produce is delivered, and a failed delivery keeps them
uncommitted for good. Deliveries here resolve only when the test says so."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rtkit import Order, Running, gated
from streamc_runtime import App, Stream
from streamc_runtime.transport import TP


def _committable(r: Running, topic: str, partition: int = 0) -> int | None:
    return r.worker.offsets.get(TP(topic, partition)).committable()


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_async_with_event_raising_is_done_only_once_its_dead_letter_is_delivered() -> None:
    app = App("e")
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def handle(stream: Stream[int]) -> None:
        async for event in stream.events():
            async with event:
                if event.value == 1:
                    raise ValueError("bad one")

    r = gated(app, ["e-dlq"])
    async with r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle()
        assert len(r.messages("e-dlq")) == 1
        assert _committable(r, "nums") == 1  # 1's dead letter is not durable yet
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "nums") == 3
    assert r.committed("nums") == {0: 3}


async def test_async_with_event_still_acks_on_a_clean_exit_and_when_the_error_is_caught() -> (
    None
):
    app = App("e")
    nums = app.topic("nums", key_type=str, value_type=int)
    acked: list[bool] = []

    @app.agent(nums)
    async def handle(stream: Stream[int]) -> None:
        async for event in stream.events():
            try:
                async with event:
                    if event.value == 1:
                        raise ValueError("handled here")
            except ValueError:
                pass
            acked.append(event.acked)

    async with Running(app) as r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle()
        assert _committable(r, "nums") == 3
    assert acked == [True, False, True]  # the caught one is acked when the agent advances
    assert r.messages("e-dlq") == []


@pytest.mark.parametrize("fail_late", [False, True])
@pytest.mark.parametrize("op", ["through", "echo", "to", "group_by", "take_through", "dlq"])
async def test_a_failed_delivery_stops_the_worker_with_the_source_uncommitted(
    op: str, fail_late: bool
) -> None:
    app = App("f")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=Any)

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        if op == "through":
            chain: Stream[Any] = stream.through(out)
        elif op == "echo":
            chain = stream.echo(out)
        elif op == "to":
            chain = stream.to(out)
        elif op == "group_by":
            chain = stream.group_by(str, topic=out)
        elif op == "take_through":
            chain = stream.take(2).through(out)
        else:
            chain = stream.process(lambda v: 1 // 0)
        async for _ in chain:
            pass

    failing = "f-dlq" if op == "dlq" else "out"
    r = gated(app, failing=[failing], fail_late=fail_late)
    async with r:
        r.produce("nums", 1)
        r.produce("nums", 2)
        if fail_late:
            await r.idle()
            r.transport.release()  # type: ignore[attr-defined]
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    # the record never reached `out` (or the DLQ): its source must be read again
    assert r.committed("nums") == {0: 0}
    assert isinstance(r.worker.failure, ConnectionError)


@pytest.mark.parametrize("op", ["through", "echo", "to", "group_by"])
async def test_forwarded_batches_stay_in_flight_until_delivered(op: str) -> None:
    app = App("b")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=list[int])
    batches: list[list[int]] = []

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        take = stream.take(2)
        if op == "through":
            chain: Stream[Any] = take.through(out)
        elif op == "echo":
            chain = take.echo(out)
        elif op == "to":
            chain = take.to(out)
        else:
            chain = take.group_by(lambda b: str(b[0]), topic=out)
        async for batch in chain:
            batches.append(batch)

    r = gated(app, ["out"])
    async with r:
        for i in range(4):
            r.produce("nums", i)
        await r.idle()
        assert batches == [[0, 1], [2, 3]]
        assert _committable(r, "nums") == 0  # handled, but the batches are not durable yet
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "nums") == 4
    assert r.committed("nums") == {0: 4}


async def test_a_batch_the_body_raises_on_is_done_only_once_every_dead_letter_is_delivered() -> (
    None
):
    app = App("d")
    orders = app.topic("orders", key_type=str, value_type=Order)
    seen: list[list[float]] = []
    calls = 0

    @app.agent(orders)
    async def batches(stream: Stream[Order]) -> None:
        nonlocal calls
        calls += 1
        async for _key, batch in stream.take(3).items():
            seen.append([o.amount for o in batch])
            if any(o.amount == 4 for o in batch):
                raise RuntimeError("bad batch")

    r = gated(app, ["d-dlq"])
    async with r:
        for i in range(7):
            r.produce("orders", {"account_id": "a", "amount": i})
        await r.idle()
        assert seen == [[0, 1, 2], [3, 4, 5]]
        assert calls == 2
        assert len(r.messages("d-dlq")) == 3
        assert _committable(r, "orders") == 3  # the whole failed batch waits for its DLQ
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "orders") == 6  # 6 is in a partial batch
    assert seen[-1] == [6.0]
    assert r.committed("orders") == {0: 7}


@pytest.mark.parametrize("where", ["process", "filter", "group_by_key"])
@pytest.mark.parametrize("is_async", [False, True])
async def test_raising_hooks_hold_until_the_dead_letter_is_delivered(
    where: str, is_async: bool
) -> None:
    app = App("h")
    nums = app.topic("nums", key_type=str, value_type=int)
    repart = app.topic("h-a-nums-k-repartition", key_type=str, value_type=int, internal=True)
    got: list[int] = []

    def sync_hook(v: int) -> Any:
        if v == 1:
            raise ValueError("hook")
        return str(v) if where == "group_by_key" else (True if where == "filter" else v)

    async def async_hook(v: int) -> Any:
        await asyncio.sleep(0)
        return sync_hook(v)

    hook: Any = async_hook if is_async else sync_hook

    @app.agent(nums, name="a")
    async def handle(stream: Stream[int]) -> None:
        if where == "process":
            chain = stream.process(hook)
        elif where == "filter":
            chain = stream.filter(hook)
        else:
            chain = stream.group_by(hook, topic=repart)
        async for v in chain:
            got.append(v)

    r = gated(app, ["h-dlq"])
    async with r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle()
        assert got == [0, 2]
        assert _committable(r, "nums") == 1
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "nums") == 3
    (dead,) = r.messages("h-dlq")
    assert dict(dead.headers)["streamc.error"] == b"hook"


async def test_manual_acks_twice_and_after_advancing_are_harmless_with_two_subscribers() -> None:
    app = App("m")
    nums = app.topic("nums", key_type=str, value_type=int)
    kept: list[Any] = []
    gate = asyncio.Event()

    @app.agent(nums, name="a")
    async def a(stream: Stream[int]) -> None:
        async for event in stream.events():
            await event.ack()
            await event.ack()
            kept.append(event)

    @app.agent(nums, name="b")
    async def b(stream: Stream[int]) -> None:
        async for _ in stream:
            await gate.wait()

    async with Running(app) as r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle() if gate.is_set() else await asyncio.sleep(0.02)
        for event in kept:  # long after `a` moved on: still no effect on b's references
            await event.ack()
        state = r.worker.offsets.get(TP("nums", 0))
        assert [state.refs(o) for o in range(3)] == [1, 1, 1]
        assert state.committable() == 0
        gate.set()
        await r.idle()
        assert state.committable() == 3


async def test_an_undecodable_message_is_done_only_once_its_dead_letter_is_delivered() -> None:
    app = App("u")
    orders = app.topic("orders", key_type=str, value_type=Order)
    copy = app.topic("copy", key_type=str, value_type=Order)
    got: list[str] = []

    @app.agent(orders, name="a")
    async def a(stream: Stream[Order]) -> None:
        async for order in stream:
            got.append("a" + order.account_id)

    @app.agent(orders, name="b")
    async def b(stream: Stream[Order]) -> None:
        async for order in stream.through(copy):
            got.append("b" + order.account_id)

    r = gated(app, ["u-dlq"])
    async with r:
        r.produce("orders", {"account_id": "x", "amount": 1})
        r.produce("orders", b"{broken", raw=True)
        r.produce("orders", {"account_id": "y", "amount": 2})
        await r.idle()
        assert sorted(got) == ["ax", "ay", "bx", "by"]
        assert _committable(r, "orders") == 1  # the broken one waits for its dead letter
        r.transport.release()  # type: ignore[attr-defined]
        await _settle()
        assert _committable(r, "orders") == 3
    (dead,) = r.messages("u-dlq")
    assert dict(dead.headers)["streamc.agent"] == b"a,b"


async def test_cancelling_a_hook_send_leaves_the_transport_future_alone() -> None:
    """A transport may return its client's own future (Kafka does); `Topic.send` hands user
    code a shield, so a timeout in a hook cannot cancel it and hide a later failure from
    the flush that guards every commit."""
    app = App("shield")
    src = app.topic("src", value_type=int)
    out = app.topic("out", value_type=int)
    timed_out: list[bool] = []

    @app.agent(src)
    async def sender(stream: Stream[int]) -> None:
        async for value in stream:
            try:
                await asyncio.wait_for(await out.send(value), 0.01)
            except TimeoutError:
                timed_out.append(True)

    r = gated(app, ["out"])
    async with r:
        r.produce("src", 1)
        await r.idle()
        assert timed_out == [True]
        ((fut, _),) = r.transport.pending
        assert not fut.cancelled()
        r.transport.release()
        assert (await fut).topic == "out"
