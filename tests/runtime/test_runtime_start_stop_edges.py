"""Worker lifecycle edge cases — stopping never hangs, a failed start leaves nothing
running, cancellation is never swallowed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path

import msgspec
import pytest
from joinkit import Account, join_app
from rtkit import Order, Running, wait_for
from statekit import totals_app
from streamc_runtime import App, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryMessage, MemoryTransport
from streamc_runtime.tasks import awaiting
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


class _SwallowingReads(MemoryTransport):
    """Once `swallow` is set, the follow of `accounts` hands over its next batch and then
    awaits inside `suppress(CancelledError)`, as aiokafka's consumer stop does, so a cancel
    landing there is lost and the reader goes on."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.swallow = False
        self.closing = asyncio.Event()

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        async for batch in super().follow(topic, starts):
            yield batch
            if self.swallow and topic == "accounts":
                self.closing.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.5)


async def test_a_global_table_reader_that_ignores_its_cancel_does_not_hold_up_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = join_app(global_=True)
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    for key in ("a0", "a1", "a2"):
        account = msgspec.json.encode(Account(account_id=key, tier=f"t-{key}"))
        broker.produce("accounts", account, key.encode())
    transport = _SwallowingReads(broker, "shop")
    worker = Worker(app, transport, stats_interval=0, commit_interval=60, shutdown_timeout=0.3)
    await worker.start()
    for key in ("a0", "a1", "a2", "a0"):
        order = msgspec.json.encode(Order(account_id=key, amount=1.0))
        broker.produce("orders", order, key.encode())
    await wait_for(lambda: len(broker.messages("enriched")) == 4)
    transport.swallow = True
    broker.produce("accounts", msgspec.json.encode(Account(account_id="a3", tier="t")), b"a3")
    await asyncio.wait_for(transport.closing.wait(), 5)  # the follower is in the swallowing await
    glob = worker.tables.globals["accounts_by_id"]
    try:
        await asyncio.wait_for(worker.stop(), 10)
        assert await worker.wait() == 0
        # what was handled is committed, as on any stop
        ends = {p: broker.end_offset(TP("orders", p)) for p in range(2)}
        assert {p: broker.committed("shop", TP("orders", p)) for p in range(2)} == ends
        left = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
        # the reader went on: the stop left it behind and said so, with where it waits...
        assert len(left) == 1 and left[0].startswith(
            "global table accounts_by_id did not end within 1.0s of being cancelled (waiting in "
        )
        assert "GlobalTable._run" in left[0]
        # ...and cancelled it again at the end, without waiting, so it does not follow on
        await asyncio.wait({glob.task}, timeout=1)
        assert glob.task.cancelled()
    finally:
        transport.swallow = False
        await _cancel_for_good(glob.task)


async def _cancel_for_good(task: asyncio.Task[None]) -> None:
    """End a task the stop left behind: a cancel landing while it still swallowed one (its
    read was closing) is lost too, so cancel until it ends."""
    for _ in range(50):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    raise AssertionError(f"{task.get_name()} does not end")


class _StuckFlush(MemoryTransport):
    """A producer that cannot deliver: its flush never ends."""

    async def flush(self) -> None:
        await asyncio.Event().wait()


async def test_a_flush_that_never_ends_does_not_hold_up_the_stop_and_nothing_is_committed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("f")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    out = app.topic("out", key_type=str, value_type=int, partitions=2)

    @app.agent(nums)
    async def double(stream: Stream[int]) -> None:
        async for _ in stream.process(lambda n: n * 2).to(out):
            pass

    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    worker = Worker(
        app, _StuckFlush(broker, "f"), stats_interval=0, commit_interval=60, shutdown_timeout=0.3
    )
    await worker.start()

    def committed() -> list[int | None]:
        return [broker.committed("f", TP("nums", p)) for p in range(2)]

    for n in range(6):
        broker.produce("nums", msgspec.json.encode(n), f"k{n}".encode())
    # The commit loop commits the first work at once (a memory commit does not flush)...
    await wait_for(lambda: committed() == [3, 3])
    for n in range(6, 10):
        broker.produce("nums", msgspec.json.encode(n), f"k{n}".encode())
    await wait_for(lambda: len(broker.messages("out")) == 10)
    await asyncio.wait_for(worker.stop(), 10)
    # ...but the stop's commit waits for the flush: output that may not be durable keeps its
    # input uncommitted, and exit status 1 says the stop did not end cleanly.
    assert await worker.wait() == 1
    assert committed() == [3, 3]
    assert sum(broker.end_offset(TP("nums", p)) for p in range(2)) == 10
    stuck = [r.getMessage() for r in caplog.records if "going on without it" in r.getMessage()]
    assert stuck[0].startswith(
        "stop: flushing the producer did not finish within 1.0s (waiting in _StuckFlush.flush"
    )


class _StuckReads(MemoryTransport):
    """Reads and follows of `stuck` topics never end and swallow every cancel (a library's
    clean-up that hangs) until `release` is set."""

    def __init__(self, broker: MemoryBroker, group_id: str, stuck: set[str]) -> None:
        super().__init__(broker, group_id)
        self.stuck = stuck
        self.release = asyncio.Event()
        self.reading: set[tuple[str, int]] = set()

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncIterator[Sequence[MemoryMessage]]:
        if topic in self.stuck:
            self.reading.add((topic, partition))
            while not self.release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await self.release.wait()
        async for batch in super().read_partition(topic, partition, start):
            yield batch

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        if topic in self.stuck:
            self.reading.update((topic, p) for p in starts)
            while not self.release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await self.release.wait()
        async for batch in super().follow(topic, starts):
            yield batch


async def test_stuck_table_and_global_table_readers_are_each_named_and_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("both")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=2)
    accounts = app.topic("accounts", key_type=str, value_type=Account, partitions=2)
    tiers = app.topic("tiers", key_type=str, value_type=Account, partitions=1)
    by_id = app.table("accounts_by_id", key_type=str, value_type=Account, source=accounts)
    by_tier = app.table("tiers_by_id", key_type=str, value_type=Account, source=tiers, global_=True)

    @app.agent(orders, name="local")
    async def local(stream: Stream[Order]) -> None:
        async for _ in stream.join(by_id):
            pass

    @app.agent(orders, name="wide")
    async def wide(stream: Stream[Order]) -> None:
        async for _ in stream.join(by_tier):
            pass

    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    transport = _StuckReads(broker, "both", {"accounts", "tiers"})
    worker = Worker(app, transport, stats_interval=0, commit_interval=60, shutdown_timeout=0.3)
    await worker.start()
    want = {("accounts", 0), ("accounts", 1), ("tiers", 0)}
    await wait_for(lambda: transport.reading == want)
    glob = worker.tables.globals["tiers_by_id"]
    try:
        await asyncio.wait_for(worker.stop(), 10)
        messages = [r.getMessage() for r in caplog.records]
        left = sorted(m.split(" did not end")[0] for m in messages if "left behind" in m)
        # The stores' readers are all given their time together, so each stuck one is named
        # within the step's bound, and the step itself finishes (stores closed).
        assert left == [
            "global table tiers_by_id",
            "restore table accounts_by_id[0]",
            "restore table accounts_by_id[1]",
        ]
        assert not [m for m in messages if "going on without it" in m]
    finally:
        transport.release.set()
        await _cancel_for_good(glob.task)


class _StuckFetch(MemoryTransport):
    """Once `stuck` is set, a fetch never ends and swallows every cancel until `release`."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.stuck = False
        self.release = asyncio.Event()

    async def fetch(self, timeout: float, max_records: int) -> list[MemoryMessage]:  # noqa: ASYNC109
        while self.stuck and not self.release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()
        return await super().fetch(timeout, max_records)


def _collect_worker(transport: MemoryTransport, **settings: float) -> Worker:
    """An agent that reads `nums` (one partition, created on the transport's broker), with a
    0.3 s shutdown timeout: what the fetch-left-behind tests stop."""
    app = App("f")
    nums = app.topic("nums", key_type=str, value_type=int)

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for _ in stream:
            pass

    transport.broker.create_topic("nums", 1)
    return Worker(
        app, transport, stats_interval=0, commit_interval=60, shutdown_timeout=0.3, **settings
    )


async def test_a_fetch_left_behind_is_named_once_and_not_waited_for_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = _StuckFetch(MemoryBroker(), "f")
    worker = _collect_worker(transport)
    await worker.start()
    transport.stuck = True
    fetch = worker._fetch_task
    assert fetch is not None
    await wait_for(lambda: "_StuckFetch.fetch" in awaiting(fetch))
    try:
        await asyncio.wait_for(worker.stop(), 10)
        assert await worker.wait() == 0
        left = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
        assert len(left) == 1 and left[0].startswith(
            "fetch did not end within 1.0s of being cancelled (waiting in "
        )
    finally:
        transport.release.set()
        await _cancel_for_good(fetch)


class _FetchSwallowingOneCancel(MemoryTransport):
    """Once `swallow` is set, the next fetch loses the cancel that lands in it (as inside
    aiokafka's `suppress(CancelledError)`) and the fetch loop goes on fetching."""

    def __init__(self, broker: MemoryBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.swallow = False
        self.swallowing = asyncio.Event()

    async def fetch(self, timeout: float, max_records: int) -> list[MemoryMessage]:  # noqa: ASYNC109
        if self.swallow:
            self.swallow = False
            self.swallowing.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(5)
        return list(await super().fetch(timeout, max_records))


async def test_a_fetch_that_went_on_after_its_cancel_is_cancelled_again_before_the_transport_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Left behind at the first step, the fetch task was never cancelled again: one whose
    cancel a library lost went on fetching from the closed transport after the stop."""
    transport = _FetchSwallowingOneCancel(MemoryBroker(), "f")
    worker = _collect_worker(transport, fetch_timeout=0.05)
    await worker.start()
    fetch = worker._fetch_task
    assert fetch is not None
    transport.swallow = True
    await asyncio.wait_for(transport.swallowing.wait(), 5)
    try:
        await asyncio.wait_for(worker.stop(), 10)
        assert await worker.wait() == 0
        left = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
        assert len(left) == 1 and left[0].startswith("fetch did not end within 1.0s")
        await asyncio.wait({fetch}, timeout=1)
        assert fetch.cancelled(), f"the fetch loop went on after the stop: {fetch}"
    finally:
        await _cancel_for_good(fetch)


async def test_a_stuck_flush_is_not_waited_for_again_by_the_stores_checkpoint(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = totals_app()
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    worker = Worker(
        app,
        _StuckFlush(broker, "shop"),
        stats_interval=0,
        commit_interval=60,
        shutdown_timeout=0.3,
        state_dir=tmp_path,
    )
    await worker.start()
    for n, key in enumerate(("a0", "a1", "a2", "a0")):
        broker.produce("orders", msgspec.json.encode(Order(account_id=key, amount=n)), key.encode())
    await wait_for(lambda: len(broker.messages("account_totals")) == 4)
    await asyncio.wait_for(worker.stop(), 10)
    assert await worker.wait() == 1
    # The failed flush already rules the checkpoint out: the stores are closed without
    # waiting for the same producer again.
    stuck = [r.getMessage() for r in caplog.records if "going on without it" in r.getMessage()]
    assert [m.split(" did not finish")[0] for m in stuck] == ["stop: flushing the producer"]
    assert all(broker.committed("shop", TP("orders", p)) is None for p in range(2))
