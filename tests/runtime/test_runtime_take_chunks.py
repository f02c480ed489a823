"""`take` straight from the source reads the Conductor's chunks: a batch is slices of them,
each chunk one offset entry, acked with one release per slice, yet commits land where acking
the batch's messages one by one put them (the batch's end, the first member dropped on
revocation, never past a dead letter not yet delivered)."""

from __future__ import annotations

import asyncio

from rtkit import Order, Running, gated, wait_for
from streamc_runtime import App, Stream
from streamc_runtime.offsets import PartitionOffsets
from streamc_runtime.transport import HANDOUT_RUN, TP


def _order(i: int) -> dict[str, object]:
    return {"account_id": f"a{i}", "amount": float(i)}


def _entries(state: PartitionOffsets) -> list[int]:
    """Where each offset entry starts: a chunk's key is `~first`, a message's its offset."""
    return [~key if key < 0 else key for key in state._pending]


async def test_a_take_batch_over_chunks_commits_exactly_to_the_batch_end() -> None:
    app = App("take-chunks")
    src = app.topic("src", value_type=Order, partitions=1)
    batches: list[list[float]] = []
    gate = asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for batch in stream.take(30):
            batches.append([o.amount for o in batch])
            if batch[0].amount == 60:
                await gate.wait()

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await wait_for(lambda: len(batches) == 3)
        state = r.worker.offsets.get(TP("src", 0))
        # Chunks of 50, 50, 20; batches of 30 cut them. Two batches are done: the second
        # chunk's entry moved up to the second batch's end, inside it.
        assert _entries(state) == [60, 2 * HANDOUT_RUN]
        assert state.in_flight == 60
        await r.worker.commit()
        assert r.committed("src") == {0: 60}
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 120}
        assert state.in_flight == 0
    assert batches == [[float(i) for i in range(j, j + 30)] for j in range(0, 120, 30)]


async def test_a_revocation_drops_the_partial_batch_of_chunks_and_commits_to_the_batch_before() -> (
    None
):
    app = App("take-chunks-revoke")
    src = app.topic("src", value_type=Order, partitions=2)
    batches: list[list[float]] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for batch in stream.take(20, within=30.0):
            batches.append([o.amount for o in batch])

    async with Running(app, revoke_timeout=1.0) as r:
        for i in range(30):
            r.produce("src", _order(i), partition=1)
        # The first 20 go out and are acked; the last 10 wait in a partial batch.
        await wait_for(lambda: r.worker.partial_batches() == 10)
        state = r.worker.offsets.get(TP("src", 1))
        assert _entries(state) == [20]  # one chunk, its entry moved up to the batch's end
        await r.worker.on_partitions_revoked({TP("src", 1)})
        assert r.worker.partial_batches() == 0
        assert r.committed("src") == {0: 0, 1: 20}
        for i in range(30, 35):
            r.produce("src", _order(i), partition=0)
        await wait_for(lambda: r.worker.partial_batches() == 5)
        r.worker.request_drain()
        await wait_for(lambda: len(batches) == 2)
    assert batches == [[float(i) for i in range(20)], [float(i) for i in range(30, 35)]]


async def test_a_revocation_mid_batch_drops_the_rest_of_its_cut_chunk_and_commits_through_it() -> (
    None
):
    app = App("take-chunks-rest")
    src = app.topic("src", value_type=Order, partitions=1)
    batches: list[list[float]] = []
    started = asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for batch in stream.take(20, within=30.0):
            started.set()
            await asyncio.sleep(0.05)  # still in hand when the revocation starts
            batches.append([o.amount for o in batch])

    async with Running(app, revoke_timeout=1.0) as r:
        for i in range(30):
            r.produce("src", _order(i))
        await started.wait()
        assert _entries(r.worker.offsets.get(TP("src", 0))) == [0]  # one chunk, one entry
        source = r.worker.sources["agent"]
        await r.worker.on_partitions_revoked({TP("src", 0)})
        # The revocation waited for the batch in hand, then committed through it; the 10
        # messages of its chunk the batch did not take are the next owner's.
        assert r.committed("src") == {0: 20}
        assert source.dropped == 10
        assert r.worker.partial_batches() == 0
    assert batches == [[float(i) for i in range(20)]]


async def test_a_batch_filtered_out_ahead_of_an_earlier_one_moves_no_commit_past_it() -> None:
    app = App("take-chunks-order")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []
    gate = asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        kept = stream.take(10).filter(lambda batch: batch[0].amount != 10)
        async for run in kept.runs():
            for batch in run:
                if batch[0].amount == 0:
                    await gate.wait()
                seen.append(batch[0].amount)

    async with Running(app) as r:
        for i in range(30):
            r.produce("src", _order(i))
        await wait_for(lambda: r.worker.offsets.get(TP("src", 0)).position == 30)
        await asyncio.sleep(0.01)
        state = r.worker.offsets.get(TP("src", 0))
        # The second batch is acked (filtered out) while the first is still in hand.
        assert _entries(state) == [0]
        assert state.in_flight == 20
        await r.worker.commit()
        assert r.committed("src") == {0: 0}
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 30}
    assert seen == [0.0, 20.0]


async def test_a_dead_lettered_batch_of_chunks_holds_its_offsets_until_delivered() -> None:
    app = App("take-chunks-dead")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[list[float]] = []

    def handle(batch: list[Order]) -> None:
        if batch[0].amount == 5:
            raise ValueError("bad batch")
        seen.append([o.amount for o in batch])

    @app.agent(src)
    async def agent(stream: Stream[list[Order]]) -> None:
        async for run in stream.take(5).runs():
            for batch in run:
                handle(batch)

    async with gated(app, ["take-chunks-dead-dlq"]) as r:
        for i in range(15):
            r.produce("src", _order(i))
        await r.idle()
        state = r.worker.offsets.get(TP("src", 0))
        assert _entries(state) == []  # the chunk is acked whole, its second batch held apart
        assert state.committable() == 5  # the first batch is done, the second still held
        r.transport.release()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert state.committable() == 15
        dead = r.messages("take-chunks-dead-dlq")
    assert [dict(m.headers)["streamc.source.offset"] for m in dead] == [
        str(i).encode() for i in range(5, 10)
    ]
    assert seen == [[0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0]]


async def test_batches_of_batches_over_chunks_release_every_member() -> None:
    app = App("take-chunks-nested")
    src = app.topic("src", value_type=Order, partitions=1)
    sizes: list[list[int]] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for outer in stream.take(5).take(2, within=0.01):
            sizes.append([len(inner) for inner in outer])

    async with Running(app) as r:
        for i in range(20):
            r.produce("src", _order(i))
        await wait_for(lambda: sum(map(sum, sizes)) == 20)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 20}
        assert r.worker.offsets.get(TP("src", 0)).in_flight == 0
    assert sizes == [[5, 5], [5, 5]]
