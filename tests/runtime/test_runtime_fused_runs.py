"""Fused loops (`Stream.runs()`): generated agents handle a run of events in one plain `for`.

What they promise is what the per-element stream promises: acks per run but never a commit
past an element in flight, a raising hook dead-letters exactly its element and the run goes
on in order, enumerate keeps counting and take keeps batching across runs, forwarded records
keep the element in flight until delivered, and revocation drops the unreached rest of a run.
"""

from __future__ import annotations

import asyncio

import msgspec
from rtkit import Order, Running, gated, wait_for
from streamc_runtime import App, Stream, awaitable
from streamc_runtime.memory import MemoryTransport
from streamc_runtime.transport import HANDOUT_RUN, TP
from streamc_runtime.worker import Worker


def _order(i: int) -> dict[str, object]:
    return {"account_id": f"a{i}", "amount": float(i)}


def _amounts(r: Running, topic: str) -> list[float]:
    return [o.amount for o in r.values(topic, Order)]


async def test_a_run_is_acked_once_handled_and_never_committed_past_an_element_in_hand() -> None:
    app = App("fused-acks")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []
    gate = asyncio.Event()

    async def wait_at(order: Order) -> None:
        if order.amount == 60:  # in the second run (50..99)
            await gate.wait()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                await wait_at(order)
                seen.append(order.amount)

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await wait_for(lambda: len(seen) == 60)
        await r.worker.commit()
        # The first run is done and acked; the second is in hand: nothing of it committed.
        assert r.committed("src") == {0: HANDOUT_RUN}
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 120}
    assert seen == [float(i) for i in range(120)]


async def test_a_raising_sync_hook_dead_letters_its_element_and_the_run_goes_on_in_order() -> None:
    app = App("fused-raise")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []
    calls = 0

    def handle(order: Order) -> None:
        nonlocal calls
        calls += 1
        if order.amount in (3, 7):
            raise ValueError(f"bad {order.amount}")
        seen.append(order.amount)

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                handle(order)

    async with Running(app) as r:
        for i in range(10):
            r.produce("src", _order(i))
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 10}
        dead = r.messages("fused-raise-dlq")
    assert calls == 10  # each element handled once, the failed ones too
    assert seen == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0]
    assert [msgspec.json.decode(m.value or b"", type=Order).amount for m in dead] == [3.0, 7.0]
    headers = dict(dead[0].headers)
    assert (headers["streamc.error"], headers["streamc.error.type"]) == (b"bad 3.0", b"ValueError")
    assert headers["streamc.source.offset"] == b"3"
    assert r.worker.dead_lettered["agent"] == 2


async def test_an_async_hook_in_a_fused_loop_is_awaited_in_order() -> None:
    app = App("fused-async")
    src = app.topic("src", value_type=Order, partitions=2)
    out = app.topic("out", value_type=Order, partitions=1)

    async def slow(order: Order) -> Order:
        await asyncio.sleep(0)
        order.language = "nl"
        return order

    def plain_returning_awaitable(order: Order) -> object:
        return slow(order)  # a plain `def` handing back a coroutine: awaited all the same

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                order = await slow(order)
                result = plain_returning_awaitable(order)
                if awaitable(result):
                    result = await result
                run.send(out, result)

    async with Running(app) as r:
        for i in range(130):
            r.produce("src", _order(i), partition=i % 2)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 65, 1: 65}
        written = r.values("out", Order)
    assert all(o.language == "nl" for o in written)
    # In order within each source partition.
    for p in range(2):
        assert [o.amount for o in written if int(o.amount) % 2 == p] == [
            float(i) for i in range(p, 130, 2)
        ]


async def test_enumerate_in_a_fused_loop_counts_across_runs_and_restarts() -> None:
    app = App("fused-enumerate")
    src = app.topic("src", value_type=Order, partitions=1)
    numbered: list[tuple[int, float]] = []

    def handle(i: int, order: Order) -> None:
        if order.amount == 55:
            raise ValueError("bad")
        numbered.append((i, order.amount))

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs(counters=(1,)):
            for order in run:
                i = run.count(0)
                handle(i, order)

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await r.idle()
    # 1..120; 56 went to the element that failed (its number is spent, as before fusing).
    assert numbered == [(i + 1, float(i)) for i in range(120) if i != 55]


async def test_take_batches_across_runs_in_a_fused_loop() -> None:
    app = App("fused-take")
    src = app.topic("src", value_type=Order, partitions=1)
    batches: list[list[float]] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.take(7).runs():
            for batch in run:
                batches.append([o.amount for o in batch])

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 119}  # the partial batch (119) is not handled yet
        r.worker.request_drain()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 120}
    assert [len(b) for b in batches] == [7] * 17 + [1]
    assert [a for b in batches for a in b] == [float(i) for i in range(120)]


async def test_sends_of_a_run_keep_their_elements_in_flight_until_delivered() -> None:
    app = App("fused-send")
    src = app.topic("src", value_type=Order, partitions=1)
    out = app.topic("out", value_type=Order, partitions=1)
    big = app.topic("big", value_type=Order, partitions=1)

    def is_big(order: Order) -> bool:
        return order.amount >= 5

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                run.send(out, order, as_received=True)
                if not is_big(order):
                    continue
                run.send(big, order, as_received=True)

    async with gated(app, gated=["big"]) as r:
        for i in range(8):
            r.produce("src", b'{"account_id":"a","amount":%d,"extra":1}' % i, key="k", raw=True,
                      headers=[("h", b"v")])  # fmt: skip
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 5}  # 5.. wait for their copies to "big"
        r.transport.release()
        await asyncio.sleep(0.01)  # the deliveries' callbacks
        await r.worker.commit()
        assert r.committed("src") == {0: 8}
        copies = r.messages("out")
        assert [m.value for m in copies] == [
            b'{"account_id":"a","amount":%d,"extra":1}' % i for i in range(8)
        ]  # as received: the undeclared field is kept
        assert {(m.key, tuple(m.headers)) for m in copies} == {(b"k", (("h", b"v"),))}
        assert _amounts(r, "big") == [5.0, 6.0, 7.0]


async def test_revocation_drops_the_unreached_rest_of_a_run() -> None:
    app = App("fused-revoke")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[tuple[int, float]] = []
    gate = asyncio.Event()
    revoked = asyncio.Event()

    async def handle(order: Order) -> None:
        if order.amount == 2:  # partition 0's second: the run holds its rest and partition 1's
            gate.set()
            await revoked.wait()
        seen.append((int(order.amount) % 2, order.amount))

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                await handle(order)

    async with Running(app, fetch_max=20, revoke_timeout=0.05) as r:
        for i in range(20):
            r.produce("src", _order(i), partition=i % 2)
        await gate.wait()
        run = r.worker.sources["agent"]._down._run  # type: ignore[union-attr]
        assert run is not None and len(run) == 20  # both partitions' messages in one run
        await r.worker.on_partitions_revoked({TP("src", 0)})
        revoked.set()
        await wait_for(lambda: r.worker.waiting > 0)
        # The revocation committed what was handled before the element in hand; what the
        # loop had not reached is dropped, never handled, and left to the next owner.
        assert r.committed("src")[0] == 1
        await r.worker.commit()
        assert [a for p, a in seen if p == 0] == [0.0, 2.0]
        assert [a for p, a in seen if p == 1] == [float(i) for i in range(1, 20, 2)]
        assert r.committed("src") == {0: 1, 1: 10}


async def test_a_loop_that_skips_runs_still_moves_on_and_acks_them() -> None:
    app = App("fused-skip")
    src = app.topic("src", value_type=Order, partitions=1)
    lengths: list[int] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            lengths.append(len(run))  # never iterated: the next run comes all the same

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 120}
    assert lengths == [HANDOUT_RUN, HANDOUT_RUN, 20]


async def test_a_record_too_large_to_send_stops_its_element_before_the_later_steps() -> None:
    # As `to` does outside a fused loop: the element is dead-lettered where its record is
    # refused, so nothing after that send (a sink, another send) ever sees it.
    app = App("fused-too-large")
    src = app.topic("src", value_type=Order, partitions=1)
    out = app.topic("out", value_type=Order, partitions=1)
    audit = app.topic("audit", value_type=Order, partitions=1)
    stored: list[str] = []

    def store(order: Order) -> None:
        stored.append(order.account_id)

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                run.send(out, order, more_steps=True)
                run.send(audit, order, more_steps=True)
                store(order)

    r = Running(app)
    r.transport = MemoryTransport(r.broker, app.name, max_record_size=2000)
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    async with r:
        for name in ("a", "b" * 2500, "c"):
            r.produce("src", {"account_id": name, "amount": 1.0})
        await r.idle()
        await r.worker.commit()
        assert stored == ["a", "c"]
        assert [o.account_id for o in r.values("out", Order)] == ["a", "c"]
        assert [o.account_id for o in r.values("audit", Order)] == ["a", "c"]
        dead = r.messages(app.dlq.name)
        assert [dict(m.headers)["streamc.source.offset"] for m in dead] == [b"1"]
        assert dict(dead[0].headers)["streamc.error.type"].endswith(b"RecordTooLargeError")
        assert r.committed("src") == {0: 3}


async def test_a_record_too_large_at_the_last_step_is_dead_lettered_with_the_run() -> None:
    app = App("fused-too-large-last")
    src = app.topic("src", value_type=Order, partitions=1)
    out = app.topic("out", value_type=Order, partitions=1)
    stored: list[str] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                stored.append(order.account_id)
                run.send(out, order)

    r = Running(app)
    r.transport = MemoryTransport(r.broker, app.name, max_record_size=2000)
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    async with r:
        for name in ("a", "b" * 2500, "c"):
            r.produce("src", {"account_id": name, "amount": 1.0})
        await r.idle()
        await r.worker.commit()
        assert [len(name) for name in stored] == [1, 2500, 1]
        assert [o.account_id for o in r.values("out", Order)] == ["a", "c"]
        dead = r.messages(app.dlq.name)
        assert [dict(m.headers)["streamc.source.offset"] for m in dead] == [b"1"]
        assert r.committed("src") == {0: 3}


async def test_stop_mid_run_finishes_the_element_in_hand_and_leaves_the_rest_uncommitted() -> None:
    # As outside a fused loop, where stopping drops the buffered events: the rest of the run
    # was never started, so it is the next owner's (a run of slow hooks would otherwise hold
    # the stop for up to a run's worth of them).
    app = App("fused-stop")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []
    started, gate = asyncio.Event(), asyncio.Event()

    async def handle(order: Order) -> None:
        if order.amount == 2:
            started.set()
            await gate.wait()
        seen.append(order.amount)

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                await run.flush()
                await handle(order)

    r = Running(app)
    async with r:
        for i in range(12):
            r.produce("src", _order(i))
        await started.wait()
        stopping = asyncio.create_task(r.worker.stop())
        await asyncio.sleep(0.01)
        assert not stopping.done()
        gate.set()
        await asyncio.wait_for(stopping, 5)
    assert seen == [0.0, 1.0, 2.0]
    assert r.committed("src") == {0: 3}


async def test_revocation_before_a_run_is_iterated_acks_none_of_it() -> None:
    # Nothing of the run is handled yet: its revoked elements are left uncommitted for the
    # new owner, never acked as if done.
    app = App("fused-revoke-unstarted")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[float] = []
    handed, revoked = asyncio.Event(), asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            handed.set()
            await revoked.wait()
            for order in run:
                seen.append(order.amount)

    async with Running(app, fetch_max=20, revoke_timeout=0.05) as r:
        for i in range(20):
            r.produce("src", _order(i), partition=i % 2)
        await handed.wait()
        await r.worker.on_partitions_revoked({TP("src", 0)})
        assert r.committed("src")[0] == 0
        revoked.set()
        await wait_for(lambda: r.worker.waiting > 0)
        await r.worker.commit()
        assert seen == [float(i) for i in range(1, 20, 2)]
        assert r.committed("src") == {0: 0, 1: 10}


async def test_a_fused_loop_registers_each_run_of_a_partition_as_one_offset_entry() -> None:
    app = App("fused-entries")
    src = app.topic("src", value_type=Order, partitions=1)
    gate = asyncio.Event()
    entries: list[list[int]] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                if order.amount == 0:
                    await gate.wait()

    async with Running(app) as r:
        for i in range(120):
            r.produce("src", _order(i))
        await wait_for(lambda: r.worker.offsets.get(TP("src", 0)).position == 120)
        state = r.worker.offsets.get(TP("src", 0))
        entries.append([~key for key in state._pending])  # runs are keyed `~first`
        assert state.in_flight == 120
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 120}
    assert entries == [[0, HANDOUT_RUN, 2 * HANDOUT_RUN]]  # one per run, not one per message


async def test_a_run_is_committed_up_to_an_element_whose_dead_letter_is_not_delivered() -> None:
    app = App("fused-dead")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []

    def handle(order: Order) -> None:
        if order.amount == 2:
            raise ValueError("bad")
        seen.append(order.amount)

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                handle(order)

    async with gated(app, ["fused-dead-dlq"]) as r:
        for i in range(5):
            r.produce("src", _order(i))
        await r.idle()
        state = r.worker.offsets.get(TP("src", 0))
        assert state.committable() == 2  # the run is acked, its element 2 still held
        r.transport.release()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert state.committable() == 5
    assert seen == [0.0, 1.0, 3.0, 4.0]


async def test_an_undecodable_message_splits_a_run_and_is_held_until_dead_lettered() -> None:
    app = App("fused-undecodable")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                seen.append(order.amount)

    async with gated(app, ["fused-undecodable-dlq"]) as r:
        for i in range(5):
            if i == 2:
                r.produce("src", b"not json", raw=True)
            else:
                r.produce("src", _order(i))
        await r.idle()
        state = r.worker.offsets.get(TP("src", 0))
        assert state.committable() == 2
        r.transport.release()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert state.committable() == 5
        (dead,) = r.messages("fused-undecodable-dlq")
    assert dead.value == b"not json"
    assert seen == [0.0, 1.0, 3.0, 4.0]


async def test_revocation_drops_the_buffered_runs_of_a_revoked_partition() -> None:
    app = App("fused-revoke-buffered")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[float] = []
    gate = asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                if order.amount == 0:
                    await gate.wait()
                seen.append(order.amount)

    async with Running(app, revoke_timeout=0.05) as r:
        for i in range(120):
            r.produce("src", _order(i), partition=i % 2)
        await wait_for(lambda: r.worker.offsets.get(TP("src", 1)).position == 60)
        source = r.worker.sources["agent"]
        await r.worker.on_partitions_revoked({TP("src", 1)})
        assert source.dropped == 60 and source.buffered() == 10  # partition 0's last run
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 60, 1: 0}  # nothing of partition 1 past its start
    assert seen == [float(i) for i in range(0, 120, 2)]


async def test_a_revocation_mid_run_commits_through_the_element_in_hand_once_it_finishes() -> None:
    app = App("fused-revoke-finish")
    src = app.topic("src", value_type=Order, partitions=1)
    seen: list[float] = []
    started = asyncio.Event()

    async def handle(order: Order) -> None:
        if order.amount == 3:
            started.set()
            await asyncio.sleep(0.02)  # still in hand when the revocation starts
        seen.append(order.amount)

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                await handle(order)

    async with Running(app, revoke_timeout=1.0) as r:
        for i in range(20):
            r.produce("src", _order(i))
        await started.wait()
        await r.worker.on_partitions_revoked({TP("src", 0)})
        # The revocation waited for the element in hand: committed through it, and no
        # further (what the loop had not reached is the next owner's).
        assert r.committed("src") == {0: 4}
    assert seen == [0.0, 1.0, 2.0, 3.0]


async def test_revoking_a_partition_whose_chunk_the_loop_passed_keeps_the_run_in_order() -> None:
    app = App("fused-revoke-passed")
    src = app.topic("src", value_type=Order, partitions=2)
    seen: list[float] = []
    started = asyncio.Event()
    gate = asyncio.Event()

    @app.agent(src)
    async def agent(stream: Stream[Order]) -> None:
        async for run in stream.runs():
            for order in run:
                if order.amount == 100:
                    started.set()
                    await gate.wait()
                seen.append(order.amount)

    async with Running(app, revoke_timeout=0.05) as r:
        for i in range(5):
            r.produce("src", _order(i), partition=0)
        for i in (100, 101):
            r.produce("src", _order(i), partition=1)
        await started.wait()
        # One run: partition 0's chunk (handled), then partition 1's (its first in hand).
        await r.worker.on_partitions_revoked({TP("src", 0)})
        gate.set()
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == {0: 5, 1: 2}
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, 101.0]  # each element once, in order
