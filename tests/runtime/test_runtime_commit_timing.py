"""When the worker commits: at most once per `commit_interval`, timed from the last commit, and
as soon as something is committable when an interval has passed since then. So the first
messages processed after start are committed at once, not at a phase fixed by the start: a
worker killed soon after its first batch does not make its successor repeat that batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from rtkit import Running, wait_for
from streamc_runtime import App, Stream
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
    worker = app.worker(transport, commit_interval=60.0, stats_interval=0)
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        await wait_for(lambda: {ORDERS: 1} in transport.commits)
        for i in range(1, 50):
            broker.produce("orders", str(i).encode(), b"k", partition=0)
        await wait_for(lambda: len(handled) == 50)
        await asyncio.sleep(0.5)  # several polls of the commit loop
        # Committable since, but the interval since the last commit has not passed.
        assert transport.commits[-1] == {ORDERS: 1}
        assert broker.committed(app.name, ORDERS) == 1
    finally:
        await worker.stop()
    # (Before it: at most the offset it started from, if a poll came before the first ack.)
    assert transport.commits[-2:] == [{ORDERS: 1}, {ORDERS: 50}]  # the stop commits the rest
    assert [c for c in transport.commits if c != {ORDERS: 0}] == [{ORDERS: 1}, {ORDERS: 50}]


async def test_committing_where_reading_started_does_not_delay_the_first_processed_commit() -> None:
    broker = MemoryBroker()
    gate = asyncio.Event()
    handled: list[int] = []
    app = App("commits")
    orders = app.topic("orders", key_type=str, value_type=int, partitions=1)

    @app.agent(orders)
    async def gated(stream: Stream[int]) -> None:
        async for value in stream:
            await gate.wait()
            handled.append(value)

    broker.create_topic("orders", 1)
    transport = CountingTransport(broker, app.name)
    worker = app.worker(transport, commit_interval=60.0, stats_interval=0)
    broker.produce("orders", b"0", b"k", partition=0)
    await worker.start()
    try:
        # Nothing processed yet: where reading started is committed (so a new owner resumes
        # there whatever its offset reset policy)...
        await wait_for(lambda: transport.commits == [{ORDERS: 0}])
        gate.set()
        # ...and the first processed message follows within a poll, not an interval later.
        await wait_for(lambda: transport.commits == [{ORDERS: 0}, {ORDERS: 1}])
        assert handled == [0]
    finally:
        await worker.stop()
