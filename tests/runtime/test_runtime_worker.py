"""Worker lifecycle: start/stop, graceful shutdown, back-pressure, failures, rebalancing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from rtkit import Running, wait_for
from streamc_runtime import App, Stream, Topic, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP


def _app() -> tuple[App, Topic[int]]:
    app = App("w")
    return app, app.topic("nums", key_type=str, value_type=int, partitions=2)


async def test_start_and_stop_are_idempotent() -> None:
    app, nums = _app()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    r = Running(app)
    await r.worker.start()
    await r.worker.start()
    await asyncio.gather(r.worker.stop(), r.worker.stop())
    await r.worker.stop()
    assert await r.worker.wait() == 0
    # an App is only declarations: it can run again
    async with Running(app, r.broker) as again:
        again.produce("nums", 1)
        await again.idle()


async def test_graceful_stop_commits_and_a_new_worker_resumes() -> None:
    app, nums = _app()
    got: list[int] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for value in stream:
            got.append(value)

    async with Running(app) as r:
        for i in range(10):
            r.produce("nums", i)
        await r.idle()
    assert r.committed("nums") == r.end_offsets("nums")
    async with Running(app, r.broker) as r2:
        r2.produce("nums", 10)
        await r2.idle()
    assert sorted(got) == list(range(11))


async def test_commit_interval_commits_in_the_background() -> None:
    app, nums = _app()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    async with Running(app, commit_interval=0.02) as r:
        r.produce("nums", 1, partition=1)
        await wait_for(lambda: r.committed("nums") == {0: 0, 1: 1})


async def test_back_pressure_pauses_and_memory_stays_bounded() -> None:
    app, nums = _app()
    gate = asyncio.Event()
    got: list[int] = []

    @app.agent(nums)
    async def slow(stream: Stream[int]) -> None:
        async for value in stream:
            await gate.wait()
            got.append(value)

    async with Running(app, buffer_size=10, fetch_max=4) as r:
        for i in range(200):
            r.produce("nums", i)
        await wait_for(lambda: bool(r.transport.paused()))
        await asyncio.sleep(0.05)
        (root,) = r.worker.conductor.streams
        assert len(root.buffer) <= 10 + 4
        assert r.worker.events_in <= 10 + 4 + 1
        assert r.worker.pauses >= 1
        gate.set()
        await r.idle()
        assert not r.transport.paused()
    assert sorted(got) == list(range(200))
    assert r.committed("nums") == r.end_offsets("nums")


async def test_failure_outside_an_element_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, nums = _app()

    @app.agent(nums)
    async def broken(stream: Stream[int]) -> None:
        raise RuntimeError("cannot even start")

    r = Running(app)
    with caplog.at_level(logging.ERROR, logger="streamc"):
        await r.worker.start()
        assert await asyncio.wait_for(r.worker.wait(), 5) == 1
    assert "cannot even start" in caplog.text or "agent broken failed" in caplog.text
    assert isinstance(r.worker.failure, RuntimeError)


async def test_shutdown_abandons_work_that_does_not_finish_in_time() -> None:
    app, nums = _app()
    started = asyncio.Event()

    @app.agent(nums)
    async def stuck(stream: Stream[int]) -> None:
        async for _ in stream:
            started.set()
            await asyncio.sleep(3600)

    async with Running(app, shutdown_timeout=0.05) as r:
        r.produce("nums", 1, partition=0)
        await started.wait()
    # the element never finished: it is not committed, so it will be processed again
    assert r.committed("nums") == {0: 0, 1: 0}


async def test_sigterm_style_request_stop_from_a_callback() -> None:
    app, nums = _app()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    r = Running(app)
    await r.worker.start()
    r.produce("nums", 5, partition=0)
    await r.idle()
    asyncio.get_running_loop().call_soon(r.worker.request_stop)
    assert await asyncio.wait_for(r.worker.wait(), 5) == 0
    assert r.committed("nums") == {0: 1, 1: 0}


async def test_stats_line_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    app, nums = _app()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    with caplog.at_level(logging.INFO, logger="streamc"):
        async with Running(app, stats_interval=0.02) as r:
            r.produce("nums", 5)
            await wait_for(lambda: "stats:" in caplog.text)
    line = next(rec.message for rec in caplog.records if rec.message.startswith("stats:"))
    assert "in-flight" in line and "dead-letters" in line


async def test_two_workers_split_partitions_and_revocation_commits() -> None:
    app = App("w")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=4)
    seen: list[tuple[int, int]] = []
    which = 0

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        me = which
        async for event in stream.events():
            seen.append((me, event.value))

    broker = MemoryBroker()
    async with Running(app, broker) as r1:
        for i in range(8):
            r1.produce("nums", i, partition=i % 4)
        await r1.idle()
        which = 1
        r2 = Running(app, broker)
        async with r2:
            await wait_for(lambda: len(r2.transport.assignment()) == 2)
            await wait_for(lambda: len(r1.transport.assignment()) == 2)
            # the partitions r1 gave up were committed on revocation
            for tp in r2.transport.assignment():
                assert broker.committed("w", tp) == 2
            for i in range(8, 16):
                r1.produce("nums", i, partition=i % 4)
            await r1.idle()
            await r2.idle()
    assert sorted(v for _, v in seen) == list(range(16))
    assert {w for w, v in seen if v >= 8} == {0, 1}
    assert all(broker.committed("w", TP("nums", p)) == 4 for p in range(4))
    assert isinstance(r2.transport, MemoryTransport)


async def test_revocation_lets_the_element_in_hand_finish_and_abandons_partial_batches() -> None:
    app = App("rv")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    slow = app.topic("slow", key_type=str, value_type=int, partitions=2)
    handled: list[tuple[str, int]] = []
    gate = asyncio.Event()
    holding = asyncio.Event()

    @app.agent(slow, name="slow")
    async def slow_agent(stream: Stream[int]) -> None:
        async for value in stream:
            holding.set()
            await gate.wait()
            handled.append(("slow", value))

    @app.agent(nums, name="batcher")
    async def batcher(stream: Stream[int]) -> None:
        async for batch in stream.take(100):
            handled.extend(("batch", v) for v in batch)

    broker = MemoryBroker()
    async with Running(app, broker) as r1:
        r1.produce("slow", 1, partition=1)
        for i in range(4):
            r1.produce("nums", i, partition=i % 2)
        await holding.wait()
        await wait_for(lambda: r1.worker.partial_batches() == 4)
        r2 = Running(app, broker)
        loop = asyncio.get_running_loop()
        joined = loop.time()
        async with r2:
            loop.call_later(0.05, gate.set)
            await wait_for(lambda: len(r2.transport.assignment()) == 2)
            # r1 gave up partition 1 of both topics: the element in hand finished and was
            # committed; the unhandled partial batch values were left to r2
            assert broker.committed("rv", TP("slow", 1)) == 1
            assert broker.committed("rv", TP("nums", 1)) in (None, 0)
            assert loop.time() - joined < 1.0  # did not wait for the abandoned values
    assert handled.count(("slow", 1)) == 1
    assert sorted(v for k, v in handled if k == "batch") == [0, 1, 2, 3]


async def test_a_failing_fetch_is_logged_and_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, nums = _app()

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    class Broken(MemoryTransport):
        async def fetch(self, timeout: float, max_records: int) -> Any:  # noqa: ASYNC109
            raise ConnectionError("broker went away")

    broker = MemoryBroker()
    worker = Worker(app, Broken(broker, app.name), stats_interval=0)
    with caplog.at_level(logging.ERROR, logger="streamc"):
        await worker.start()
        assert await asyncio.wait_for(worker.wait(), 5) == 1
    assert "fetch failed; stopping the worker" in caplog.text
    assert "broker went away" in caplog.text


async def test_bad_keys_and_tombstones() -> None:
    app = App("k")
    by_int = app.topic("by_int", key_type=int, value_type=int)
    raw = app.topic("raw", key_type=bytes, value_type=bytes)
    got: list[Any] = []

    @app.agent(by_int & raw)
    async def collect(stream: Stream[Any]) -> None:
        async for key, value in stream.items():
            got.append((key, value))

    async with Running(app) as r:
        r.produce("by_int", 1, key="12")
        r.produce("by_int", 2, key="twelve")
        r.broker.produce("raw", None, b"\xff")
        await r.idle()
    assert sorted(got, key=repr) == sorted([(12, 1), (b"\xff", None)], key=repr)
    (dead,) = r.messages("k-dlq")
    assert b"decimal integer" in dict(dead.headers)["streamc.error"]


async def test_keys_decoded_lazily_still_dead_letter_on_arrival() -> None:
    """Keys are decoded on first read, but a key that cannot decode is dead-lettered on
    arrival even by an agent that never reads keys (invalid UTF-8 for a `str` key)."""
    app = App("lazy")
    by_str = app.topic("by_str", key_type=str, value_type=int)
    by_json = app.topic("by_json", key_type=list[int], value_type=int)
    values: list[Any] = []
    keys: list[Any] = []

    @app.agent(by_str, name="values_only")
    async def values_only(stream: Stream[Any]) -> None:
        async for value in stream:
            values.append(value)

    @app.agent(by_str & by_json, name="with_keys")
    async def with_keys(stream: Stream[Any]) -> None:
        async for event in stream.events():
            assert event.key is event.key  # decoded once, then the same object
            keys.append(event.key)

    async with Running(app) as r:
        r.broker.produce("by_str", b"1", b"plain")
        r.broker.produce("by_str", b"2", "Zürich".encode())
        r.broker.produce("by_str", b"3", b"\xff\xfe")
        r.broker.produce("by_str", b"4", None)
        r.broker.produce("by_json", b"5", b"[1,2]")
        r.broker.produce("by_json", b"6", b"[1,")
        await r.idle()
        await r.worker.commit()
    assert sorted(values) == [1, 2, 4]
    assert sorted(keys, key=repr) == sorted(["plain", "Zürich", None, [1, 2]], key=repr)
    dead = r.messages("lazy-dlq")
    assert sorted(m.value for m in dead) == [b"3", b"6"]
    for m in dead:
        # once for every subscribed agent, as before keys were decoded lazily
        assert dict(m.headers)["streamc.agent"] in (b"values_only,with_keys", b"with_keys")
    assert r.committed("by_str") == {0: 4} and r.committed("by_json") == {0: 2}
