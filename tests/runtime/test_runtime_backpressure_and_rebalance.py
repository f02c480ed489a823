"""Back-pressure and rebalancing on the memory broker — paused partitions always resume,
nothing is lost when a group member stops, a slow agent does not starve a fast one."""

from __future__ import annotations

import asyncio

import pytest
from rtkit import Running, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryBroker
from streamc_runtime.transport import TP


async def test_a_full_stream_emptied_by_revocation_resumes_its_remaining_partitions() -> None:
    app = App("bp")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    gate = asyncio.Event()
    got: list[int] = []

    @app.agent(nums)
    async def slow(stream: Stream[int]) -> None:
        async for v in stream:
            await gate.wait()
            got.append(v)

    broker = MemoryBroker()
    async with Running(app, broker, buffer_size=4, fetch_max=4, revoke_timeout=0.05) as r1:
        for i in range(20):  # everything on partition 1: r1's buffer fills, both pause
            r1.produce("nums", i, partition=1)
        await wait_for(lambda: r1.transport.paused() == {TP("nums", 0), TP("nums", 1)})
        async with Running(app, broker) as r2:  # takes partition 1, and r1's buffer with it
            await wait_for(lambda: r1.transport.assignment() == {TP("nums", 0)})
            gate.set()
            for i in range(100, 105):
                r1.produce("nums", i, partition=0)
            await wait_for(lambda: [v for v in got if v >= 100] == list(range(100, 105)))
            assert not r1.transport.paused()
            await r2.idle()
        await r1.idle()
    assert set(got) == set(range(20)) | set(range(100, 105))
    assert r1.committed("nums") == r1.end_offsets("nums")


async def test_a_slow_agent_pauses_a_shared_topic_and_nothing_is_lost() -> None:
    app = App("two")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=3)
    gate = asyncio.Event()
    fast: list[int] = []
    slow: list[int] = []

    @app.agent(nums, name="fast")
    async def fast_agent(stream: Stream[int]) -> None:
        async for v in stream:
            fast.append(v)

    @app.agent(nums, name="slow")
    async def slow_agent(stream: Stream[int]) -> None:
        async for v in stream:
            await gate.wait()
            slow.append(v)

    async with Running(app, buffer_size=10, fetch_max=5) as r:
        for i in range(300):
            r.produce("nums", i, key=str(i))
        await wait_for(lambda: bool(r.transport.paused()))
        await asyncio.sleep(0.02)
        assert r.worker.events_in <= 10 + 5 + 1  # bounded by the slow agent's buffer
        assert all(len(s.buffer) <= 15 for s in r.worker.conductor.streams)
        assert r.committed("nums") == {0: 0, 1: 0, 2: 0}
        gate.set()
        await r.idle()
        assert not r.transport.paused()
    assert sorted(fast) == sorted(slow) == list(range(300))
    assert r.committed("nums") == r.end_offsets("nums")


N = 300


@pytest.mark.parametrize("chain", ["plain", "through", "take", "group_by"])
async def test_two_workers_one_stops_mid_stream_nothing_is_lost(chain: str) -> None:
    app = App("rb")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=4)
    mid = app.topic("rb-ag-nums-k-repartition", key_type=str, value_type=int, partitions=3)
    seen: list[int] = []

    @app.agent(nums, name="ag")
    async def agent(stream: Stream[int]) -> None:
        if chain == "take":
            async for values in stream.take(7, within=0.01):
                await asyncio.sleep(0)
                seen.extend(values)
            return
        if chain == "through":
            s: Stream[int] = stream.through(mid)
        elif chain == "group_by":
            s = stream.group_by(lambda v: str(v % 5), topic=mid)
        else:
            s = stream
        async for v in s:
            await asyncio.sleep(0)
            seen.append(v)

    broker = MemoryBroker()
    opts = {"commit_interval": 0.01, "buffer_size": 8, "fetch_max": 5}
    async with Running(app, broker, **opts) as r1:
        r2 = Running(app, broker, **opts)
        await r2.worker.start()
        for i in range(N):
            r1.produce("nums", i, key=str(i))
            if i % 10 == 0:
                await asyncio.sleep(0.001)
            if i == N // 2:
                await asyncio.wait_for(r2.worker.stop(), 5)
        await wait_for(lambda: set(seen) == set(range(N)))
        await r1.idle()
        assert r1.transport.assignment() >= {TP("nums", p) for p in range(4)}
    assert set(seen) == set(range(N))  # at least once
    assert r1.committed("nums") == r1.end_offsets("nums")
    assert r1.committed(mid.name) == r1.end_offsets(mid.name) or chain in ("plain", "take")
