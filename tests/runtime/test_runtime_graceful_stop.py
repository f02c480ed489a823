"""Graceful stop (SIGTERM's `request_stop`/`stop`) mid-batch, with produces still pending,
with paused partitions; background failures stop the worker and `wait()` says so."""

from __future__ import annotations

import asyncio
from typing import Any

from rtkit import Running, gated, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryBroker
from streamc_runtime.transport import TP


def _batch_app(handled: list[int], gate: asyncio.Event, started: asyncio.Event) -> App:
    app = App("sd")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)

    @app.agent(nums)
    async def batches(stream: Stream[int]) -> None:
        async for batch in stream.take(5, within=30.0):
            started.set()
            await gate.wait()
            handled.extend(batch)

    return app


async def test_stop_mid_batch_finishes_it_and_leaves_the_rest_to_the_next_worker() -> None:
    first: list[int] = []
    gate, started = asyncio.Event(), asyncio.Event()
    broker = MemoryBroker()
    r = Running(_batch_app(first, gate, started), broker)
    async with r:
        for i in range(12):
            r.produce("nums", i, partition=0)
        await started.wait()
        stopping = asyncio.create_task(r.worker.stop())  # SIGTERM while the batch is in hand
        await asyncio.sleep(0.01)
        assert not stopping.done()
        gate.set()
        await asyncio.wait_for(stopping, 5)
    assert first[:5] == [0, 1, 2, 3, 4]
    committed = r.committed("nums")[0]
    assert committed == len(first)  # everything handled and nothing more
    second: list[int] = []
    open_gate = asyncio.Event()
    open_gate.set()
    async with Running(_batch_app(second, open_gate, asyncio.Event()), broker) as r2:
        await r2.idle()
    assert sorted(first + second) == list(range(12))
    assert r2.committed("nums") == {0: 12, 1: 0}


async def test_stop_hands_over_a_partial_batch_and_commits_only_after_it_is_handled() -> None:
    handled: list[int] = []
    gate, started = asyncio.Event(), asyncio.Event()
    r = Running(_batch_app(handled, gate, started))
    async with r:
        for i in range(3):
            r.produce("nums", i, partition=1)
        await r.idle()
        assert handled == [] and r.worker.partial_batches() == 3
        stopping = asyncio.create_task(r.worker.stop())
        await started.wait()  # the stop handed the partial batch over
        await asyncio.sleep(0.01)
        assert r.committed("nums") == {0: 0, 1: 0}
        gate.set()
        await asyncio.wait_for(stopping, 5)
    assert handled == [0, 1, 2]
    assert r.committed("nums") == {0: 0, 1: 3}


async def test_stop_flushes_pending_produces_before_committing() -> None:
    app = App("pp")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        async for _ in stream.echo(out):
            pass

    r = gated(app, ["out"])
    async with r:
        for i in range(5):
            r.produce("nums", i)
        await r.idle()
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 0
    # the stop's flush delivered them, then the commit covered their sources
    assert r.committed("nums") == {0: 5}
    assert len(r.messages("out")) == 5


async def test_stop_with_undeliverable_produces_commits_nothing_past_them() -> None:
    app = App("pp")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        async for _ in stream.through(out):
            pass

    r = gated(app, failing=["out"], fail_late=True)
    async with r:
        for i in range(3):
            r.produce("nums", i)
        await r.idle()
    assert r.committed("nums") == {0: 0}
    assert await r.worker.wait() == 1


async def test_stop_with_paused_partitions_loses_nothing() -> None:
    app = App("ps")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    gate = asyncio.Event()
    got: list[int] = []

    @app.agent(nums)
    async def slow(stream: Stream[int]) -> None:
        async for v in stream:
            await gate.wait()
            got.append(v)

    broker = MemoryBroker()
    r = Running(app, broker, buffer_size=6, fetch_max=3)
    async with r:
        for i in range(60):
            r.produce("nums", i, key=str(i))
        await wait_for(lambda: bool(r.transport.paused()))
        stopping = asyncio.create_task(r.worker.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(stopping, 5)
    assert len(got) == 1  # only the element in hand; the buffer was abandoned
    async with Running(app, broker) as r2:
        await r2.idle()
    assert sorted(got) == list(range(60))
    assert r2.committed("nums") == r2.end_offsets("nums")


async def test_a_dying_forwarder_stops_the_worker_and_wait_reports_it() -> None:
    app = App("bg")
    nums = app.topic("nums", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    def explode(v: int) -> int:
        raise ValueError("hook")

    @app.agent(nums)
    async def forward(stream: Stream[int]) -> None:
        async for _ in stream.process(explode).through(out):
            pass

    # the hook fails, and so does its dead letter: the forwarding task dies
    r = gated(app, failing=["bg-dlq"])
    r.transport.send = _raising_send(r.transport.send, "bg-dlq")  # type: ignore[method-assign]
    async with r:
        r.produce("nums", 1)
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert not r.worker.running
    assert r.committed("nums") == {0: 0}


def _raising_send(send: Any, topic: str) -> Any:
    async def wrapped(t: str, *args: Any, **kwargs: Any) -> Any:
        if t == topic:
            raise ConnectionError("producer closed")
        return await send(t, *args, **kwargs)

    return wrapped


async def test_a_cancelled_error_escaping_a_body_stops_the_worker_instead_of_vanishing() -> None:
    app = App("ce")
    nums = app.topic("nums", key_type=str, value_type=int)
    got: list[int] = []

    @app.agent(nums)
    async def body(stream: Stream[int]) -> None:
        async for v in stream:
            got.append(v)
            if v == 1:  # e.g. awaiting something a library cancelled
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                fut.cancel()
                await fut

    async with Running(app) as r:
        for i in range(3):
            r.produce("nums", i)
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert isinstance(r.worker.failure, asyncio.CancelledError)
    assert r.committed("nums") == {0: 1}  # 1 was not finished: it is read again
