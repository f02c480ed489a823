"""When the worker commits: at most once per `commit_interval`, timed from the last commit, and
as soon as something is committable when an interval has passed since then. So the first
messages processed after start are committed at once, not at a phase fixed by the start: a
worker killed soon after its first batch does not make its successor repeat that batch."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping

from rtkit import Running, wait_for
from streamc_runtime import App, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP

ORDERS = TP("orders", 0)


def _app(handled: list[int], stall_at: int | None) -> App:
    app = App("commits")
    orders = app.topic("orders", key_type=str, value_type=int, partitions=1)

    @app.agent(orders)
    async def slow(stream: Stream[int]) -> None:
        async for value in stream:
            if value == stall_at:
                await asyncio.sleep(3600)  # still working on it when the worker is killed
            handled.append(value)

    return app


class CountingTransport(MemoryTransport):
    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.commits: list[dict[TP, int]] = []

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        self.commits.append(dict(offsets))
        await super().commit(offsets)


async def test_worker_killed_after_its_first_batch_has_committed_it() -> None:
    broker = MemoryBroker()
    first: list[int] = []
    r = Running(_app(first, stall_at=10), broker, commit_interval=60.0, shutdown_timeout=0.01)
    for i in range(100):
        r.produce("orders", i)
    async with r:
        await wait_for(lambda: len(first) == 10)
        # Long before the 60 s interval: the first processed messages are committed at once.
        await wait_for(lambda: broker.committed("commits", ORDERS) == 10)

        async def killed() -> bool:  # a SIGKILL: nothing is committed on the way out
            return True

        r.worker.commit = killed  # type: ignore[method-assign]
    assert first == list(range(10))
    second: list[int] = []
    async with Running(_app(second, stall_at=None), broker) as r2:
        await r2.idle()
    assert second == list(range(10, 100))  # the first batch is not repeated


async def test_a_busy_worker_commits_at_most_once_per_interval() -> None:
    broker = MemoryBroker()
    handled: list[int] = []
    app = _app(handled, stall_at=None)
    broker.create_topic("orders", 1)
    transport = CountingTransport(broker, app.name)
    worker = Worker(app, transport, commit_interval=60.0, stats_interval=0)
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        await wait_for(lambda: transport.commits == [{ORDERS: 1}])
        for i in range(1, 50):
            broker.produce("orders", str(i).encode(), b"k", partition=0)
        await wait_for(lambda: len(handled) == 50)
        await asyncio.sleep(0.5)  # several polls of the commit loop
        # Committable since, but the interval since the last commit has not passed.
        assert transport.commits == [{ORDERS: 1}]
        assert broker.committed(app.name, ORDERS) == 1
    finally:
        await worker.stop()
    assert transport.commits == [{ORDERS: 1}, {ORDERS: 50}]  # the stop commits the rest


class SlowFirstCommitTransport(CountingTransport):
    """The first commit is made only on `release` (as a flush behind a busy producer)."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.release = asyncio.Event()

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        first = not self.commits
        self.commits.append(dict(offsets))
        if first:
            await self.release.wait()
        await MemoryTransport.commit(self, offsets)


async def test_the_next_commit_is_due_an_interval_after_the_last_began_not_ended() -> None:
    broker = MemoryBroker()
    handled: list[int] = []
    app = _app(handled, stall_at=None)
    broker.create_topic("orders", 1)
    transport = SlowFirstCommitTransport(broker, app.name)
    worker = Worker(app, transport, commit_interval=60.0, stats_interval=0)
    loop = asyncio.get_running_loop()
    real_time = loop.time
    skipped = 0.0  # seconds the loop's clock is moved on, to pass an interval without waiting
    loop.time = lambda: real_time() + skipped  # type: ignore[method-assign]
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        await wait_for(lambda: transport.commits == [{ORDERS: 1}])  # begun, not done
        for i in range(1, 50):
            broker.produce("orders", str(i).encode(), b"k", partition=0)
        await wait_for(lambda: len(handled) == 50)
        skipped = 61.0  # the first commit took longer than the interval...
        transport.release.set()
        # ...so the next is due as it ends, not an interval (60 s) after that.
        await wait_for(lambda: transport.commits == [{ORDERS: 1}, {ORDERS: 50}])
        assert broker.committed(app.name, ORDERS) == 50
    finally:
        await worker.stop()
        del loop.time  # the loop's own method again


def _gated_app(gate: asyncio.Event, handled: list[int]) -> App:
    app = App("commits")
    orders = app.topic("orders", key_type=str, value_type=int, partitions=1)

    @app.agent(orders)
    async def gated(stream: Stream[int]) -> None:
        async for value in stream:
            await gate.wait()
            handled.append(value)

    return app


async def test_where_reading_started_goes_with_the_first_processed_commit() -> None:
    broker = MemoryBroker()
    gate = asyncio.Event()
    handled: list[int] = []
    app = _gated_app(gate, handled)
    broker.create_topic("orders", 1)
    transport = CountingTransport(broker, app.name)
    worker = Worker(app, transport, commit_interval=60.0, stats_interval=0, shutdown_timeout=0.01)
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        await wait_for(lambda: worker.offsets.partitions.get(ORDERS) is not None)
        await asyncio.sleep(0.5)  # several polls of the commit loop
        # Nothing processed: committing where reading started alone would start an interval
        # and so put the first processed commit an interval later.
        assert transport.commits == []
        gate.set()
        await wait_for(lambda: transport.commits == [{ORDERS: 1}])
        assert handled == [0]
    finally:
        await worker.stop()


async def test_where_reading_started_is_committed_after_an_interval_without_work() -> None:
    broker = MemoryBroker()
    app = _gated_app(asyncio.Event(), [])
    broker.create_topic("orders", 1)
    transport = CountingTransport(broker, app.name)
    worker = Worker(app, transport, commit_interval=0.2, stats_interval=0, shutdown_timeout=0.01)
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        # So a new owner resumes there, whatever its offset reset policy.
        await wait_for(lambda: transport.commits == [{ORDERS: 0}])
    finally:
        await worker.stop()


async def test_a_cpu_bound_agent_lets_the_commit_loop_run_while_its_buffer_is_full() -> None:
    broker = MemoryBroker()
    app = App("commits")
    orders = app.topic("orders", key_type=str, value_type=int, partitions=1)
    committed_seen: list[int] = []  # the committed offset when each element was handled

    @app.agent(orders)
    async def busy(stream: Stream[int]) -> None:
        async for _value in stream:
            time.sleep(0.002)  # noqa: ASYNC251 - CPU-bound work: never awaits anything
            committed_seen.append(broker.committed("commits", ORDERS) or 0)

    r = Running(app, broker, commit_interval=60.0)
    for i in range(400):
        r.produce("orders", i)
    async with r:
        await wait_for(lambda: len(committed_seen) == 400, within=30)
    # All 400 were buffered at once; the first processed ones were committed while the agent
    # still worked through them, not only once its buffer ran dry.
    assert any(0 < c for c in committed_seen[:300])


async def test_a_slow_agent_gives_the_loop_a_turn_every_few_events_not_every_64() -> None:
    broker = MemoryBroker()
    app = App("commits")
    orders = app.topic("orders", key_type=str, value_type=int, partitions=1)
    handled: list[int] = []

    @app.agent(orders)
    async def slow(stream: Stream[int]) -> None:
        async for value in stream:
            time.sleep(0.002)  # noqa: ASYNC251 - CPU-bound work: never awaits anything
            handled.append(value)

    turns: list[int] = []  # how many had been handled at each turn another task got

    async def other_task() -> None:
        while True:
            turns.append(len(handled))
            await asyncio.sleep(0)

    r = Running(app, broker, commit_interval=60.0)
    for i in range(300):
        r.produce("orders", i)
    async with r:
        ticker = asyncio.ensure_future(other_task())
        try:
            await wait_for(lambda: len(handled) == 300, within=30)
        finally:
            ticker.cancel()
    # Once its pace is known (after the first look at the clock, 64 events in), the agent
    # lets the loop turn about every 10 ms of work: a few 2 ms events, never 64 again.
    after = [n for n in turns if n >= 70]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps and max(gaps) <= 16
