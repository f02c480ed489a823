"""Worker lifecycle edge cases — stopping never hangs, a failed start leaves nothing
running, cancellation is never swallowed."""

from __future__ import annotations

import asyncio
import signal

import pytest
from rtkit import Running, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP, TopicSpec


class _Listener:
    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        pass


async def test_memory_fetch_cancelled_as_data_arrives_is_cancelled() -> None:
    broker = MemoryBroker()
    t = MemoryTransport(broker, "g")
    await t.ensure_topics([TopicSpec("t", 1)])
    await t.start()
    await t.subscribe(["t"], _Listener())
    task = asyncio.create_task(t.fetch(5.0, 10))
    await wait_for(lambda: bool(broker._waiters))  # the fetch waits for data
    broker.produce("t", b"x")  # wakes the fetch...
    task.cancel()  # ...in the same instant it is cancelled
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stop_requested_as_data_arrives_does_not_hang() -> None:
    app = App("s")
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    r = Running(app, fetch_timeout=5.0)
    await r.worker.start()
    r.produce("nums", 1)
    await r.idle()
    r.produce("nums", 2)  # wakes the fetch...
    r.worker.request_stop()  # ...which the stop then cancels
    assert await asyncio.wait_for(r.worker.wait(), 3) == 0


async def test_failure_during_start_leaves_nothing_running() -> None:
    app = App("z")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)

    @app.agent(nums)
    async def broken(stream: Stream[int]) -> None:
        raise RuntimeError("cannot even start")

    broker = MemoryBroker()
    r = Running(app, broker)
    await r.worker.start()
    assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    await asyncio.sleep(0.02)
    assert not r.worker.running
    # it left the group: a healthy worker of the same group gets every partition
    app2 = App("z")
    nums2 = app2.topic("nums", key_type=str, value_type=int, partitions=2)
    got: list[int] = []

    @app2.agent(nums2)
    async def collect(stream: Stream[int]) -> None:
        async for v in stream:
            got.append(v)

    async with Running(app2, broker) as r2:
        for i in range(4):
            r2.produce("nums", i, partition=i % 2)
        await wait_for(lambda: sorted(got) == [0, 1, 2, 3], 3)
        assert r2.transport.assignment() == {TP("nums", 0), TP("nums", 1)}


async def test_stop_during_start_leaves_nothing_running() -> None:
    app = App("z")
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    r = Running(app)
    starting = asyncio.create_task(r.worker.start())
    await asyncio.sleep(0)  # start is under way (letting the agents build their streams)
    await asyncio.wait_for(r.worker.stop(), 3)
    await starting
    await asyncio.sleep(0.02)
    assert not r.worker.running
    assert await r.worker.wait() == 0
    assert r.broker._group("z").members == []


async def test_the_worker_command_stops_on_sigterm_while_still_connecting() -> None:
    from streamc_runtime.main import _serve

    class Connecting(MemoryTransport):
        """A broker that cannot be reached yet: start retries until cancelled."""

        def __init__(self, broker: MemoryBroker, group_id: str) -> None:
            super().__init__(broker, group_id)
            self.connecting = asyncio.Event()
            self.gave_up = False

        async def start(self) -> None:
            self.connecting.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.gave_up = True
                raise

    app = App("c")
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    transport = Connecting(MemoryBroker(), app.name)
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(_serve(app, transport, 1.0))
    try:
        await asyncio.wait_for(transport.connecting.wait(), 3)
        worker = app.current_worker
        assert worker is not None
        worker.request_stop()  # what the SIGTERM handler calls
        assert await asyncio.wait_for(serving, 3) == 0
        assert transport.gave_up
        assert not worker.running
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
