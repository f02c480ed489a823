"""Fair hand-out: while several partitions have a backlog, `fetch` interleaves them in runs of
`HANDOUT_RUN` records, so a slow agent progresses on every partition at the same pace instead
of draining one partition before it touches the next."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection

from rtkit import Running, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import HANDOUT_RUN, TP, TopicSpec

PER_PARTITION = 300


class _Listener:
    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        pass


def _runs(partitions: list[int]) -> list[tuple[int, int]]:
    """(partition, length) of each run of consecutive messages from one partition."""
    runs: list[tuple[int, int]] = []
    for p in partitions:
        if runs and runs[-1][0] == p:
            runs[-1] = (p, runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


async def test_memory_fetch_hands_out_partitions_in_turns_of_a_run() -> None:
    assert HANDOUT_RUN == 50  # the figures below are written for it
    broker = MemoryBroker()
    t = MemoryTransport(broker, "g")
    await t.ensure_topics([TopicSpec("t", 4)])
    for p in range(4):
        for i in range(120 if p else 30):
            broker.produce("t", f"{p}:{i}".encode(), partition=p)
    await t.start()
    await t.subscribe(["t"], _Listener())

    first = await t.fetch(0.01, 200)
    # Partition 0 has 30 messages: one short run, then the others in turns of 50.
    assert _runs([m.partition for m in first]) == [(0, 30), (1, 50), (2, 50), (3, 50), (1, 20)]
    # The next fetch goes on with the partition after the one the last ended with.
    second = await t.fetch(0.01, 200)
    assert _runs([m.partition for m in second]) == [(2, 50), (3, 50), (1, 50), (2, 20), (3, 20)]
    every = first + second
    for p in range(4):  # each partition in offset order, none lost or twice
        assert [m.offset for m in every if m.partition == p] == list(range(120 if p else 30))
    assert await t.fetch(0.01, 200) == []


async def test_memory_fetch_skips_paused_partitions_in_the_turns() -> None:
    broker = MemoryBroker()
    t = MemoryTransport(broker, "g")
    await t.ensure_topics([TopicSpec("t", 3)])
    for p in range(3):
        for _i in range(100):
            broker.produce("t", b"x", partition=p)
    await t.start()
    await t.subscribe(["t"], _Listener())
    t.pause([TP("t", 1)])
    got = await t.fetch(0.01, 150)
    assert _runs([m.partition for m in got]) == [(0, 50), (2, 50), (0, 50)]
    t.resume([TP("t", 1)])
    got = await t.fetch(0.01, 150)
    assert _runs([m.partition for m in got]) == [(1, 50), (2, 50), (1, 50)]


async def test_slow_agent_with_a_backlog_progresses_on_every_partition() -> None:
    app = App("fair")
    orders = app.topic("orders", key_type=str, value_type=str, partitions=4)
    handled: list[int] = []  # the partition of each element, in the order handled
    worst = 0  # the largest progress gap between two partitions at any point

    @app.agent(orders)
    async def slow(stream: Stream[str]) -> None:
        nonlocal worst
        counts: Counter[int] = Counter()
        async for value in stream:
            await asyncio.sleep(0)  # a slow agent: the fetch loop runs ahead of it
            p = int(value.split(":")[0])
            handled.append(p)
            counts[p] += 1
            if len(handled) < 4 * PER_PARTITION - 2 * HANDOUT_RUN:  # all still have a backlog
                worst = max(
                    worst, max(counts[q] for q in range(4)) - min(counts[q] for q in range(4))
                )

    broker = MemoryBroker()
    r = Running(app, broker)
    for p in range(4):
        for i in range(PER_PARTITION):
            r.produce("orders", f"{p}:{i}", partition=p)
    async with r:
        await wait_for(lambda: len(handled) == 4 * PER_PARTITION)
    assert Counter(handled) == {p: PER_PARTITION for p in range(4)}
    assert worst <= HANDOUT_RUN
    # Every partition is touched within the first turn of runs.
    assert set(handled[: 4 * HANDOUT_RUN]) == {0, 1, 2, 3}
