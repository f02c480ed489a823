"""`aggregate` folds its elements in runs (up to 1,000 taken at once from the buffer): a run
still shares the event loop as every agent does, a sampled run is timed per element, and an
element whose position header cannot be read is dead-lettered like any bad element."""

from __future__ import annotations

import asyncio
import itertools
import time
import types
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import streamc_runtime.source as source_module
from rtkit import Order, Running, wait_for
from statekit import AccountTotals, TotalsState, row
from streamc_runtime import App, Stream
from streamc_runtime.state import POSITION_HEADER

Shape = Callable[[Stream[Order]], Stream[Order]]

SHAPES: dict[str, Shape] = {
    # The aggregate takes runs straight from the source's buffer.
    "from the buffer": lambda stream: stream,
    # The aggregate pulls its run through the operations before it.
    "through a where": lambda stream: stream.filter(lambda order: order.amount >= 0),
}


def totals(
    fold: Callable[[TotalsState, Order], TotalsState],
    shape: Shape,
    seen: Callable[[], Any] | None = None,
) -> App:
    app = App("shop")
    src = app.topic("orders", key_type=str, value_type=Order, partitions=1)
    table = app.table(
        "totals", key_type=str, value_type=AccountTotals, state_type=TotalsState, partitions=1
    )

    @app.agent(src, name="totals")
    async def agent(stream: Stream[Order]) -> None:
        async for _ in shape(stream).aggregate(table, fold=fold, row=row):
            if seen is not None:
                await seen()

    return app


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
async def test_a_run_of_slow_folds_lets_the_loop_run_every_few_elements(shape: Shape) -> None:
    folded: list[float] = []

    def fold(state: TotalsState, order: Order) -> TotalsState:
        time.sleep(0.0005)  # CPU-bound work: 64 of them exceed the agent's 10 ms
        folded.append(order.amount)
        state.orders += 1
        return state

    r = Running(totals(fold, shape))
    for i in range(300):
        r.produce("orders", Order(account_id=f"a{i % 3}", amount=float(i)), key=f"a{i % 3}")
    turns: list[int] = []  # elements folded at each turn of the loop

    async def watch() -> None:
        while True:
            turns.append(len(folded))
            await asyncio.sleep(0)

    async with r:
        watcher = asyncio.ensure_future(watch())
        try:
            await wait_for(lambda: len(folded) == 300, within=30)
        finally:
            watcher.cancel()
        await r.idle()
        assert r.worker.table("totals") == {
            f"a{k}": AccountTotals(account_id=f"a{k}", orders=100, amount=0.0) for k in range(3)
        }
    assert folded == [float(i) for i in range(300)]
    # The agent looks at the clock every 64 elements and yields once 10 ms have passed (as
    # every agent does), never folding a whole run of 300 with the loop held.
    steps = [b - a for a, b in itertools.pairwise(turns)]
    assert max(steps) <= 64


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
async def test_a_sampled_run_is_timed_as_its_share_per_element(
    shape: Shape, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sampler's clock, advanced only by the folds: one second per element.
    clock = [1000.0]
    monkeypatch.setattr(source_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def fold(state: TotalsState, order: Order) -> TotalsState:
        clock[0] += 1.0
        state.orders += 1
        return state

    gate = asyncio.Event()
    handled: list[int] = []

    async def seen() -> None:
        handled.append(1)
        if len(handled) == 1:
            await gate.wait()  # the next 20 orders gather in the buffer meanwhile

    r = Running(totals(fold, shape, seen))
    async with r:
        r.produce("orders", Order(account_id="a", amount=0.0), key="a")
        await wait_for(lambda: len(handled) == 1)
        for _ in range(20):
            r.produce("orders", Order(account_id="a", amount=1.0), key="a")
        source = r.worker.sources["totals"]
        await wait_for(lambda: len(source.buffer) == 20)
        source.sample = True  # what the sampler does, ten times a second
        gate.set()
        await r.idle()
    assert len(handled) == 21
    # One run of 20 was timed (20 s on the folds' clock): each element took 1 s of it.
    assert (source.latency.count, source.latency.sum) == (1, 1.0)


@pytest.mark.parametrize(
    "mark", [b"garbage", b"5", b":0:5", b"orders:0:x", b"\xff\xfe:0:5", b"orders:zero:5"], ids=repr
)
async def test_an_unreadable_position_header_dead_letters_its_element_only(mark: bytes) -> None:
    def fold(state: TotalsState, order: Order) -> TotalsState:
        state.orders += 1
        state.amount += order.amount
        return state

    r = Running(totals(fold, SHAPES["from the buffer"]))
    async with r:
        r.produce("orders", Order(account_id="a", amount=1.0), key="a")
        r.produce(
            "orders",
            Order(account_id="a", amount=10.0),
            key="a",
            headers=[(POSITION_HEADER, mark)],
        )
        r.produce("orders", Order(account_id="a", amount=2.0), key="a")
        await r.idle()
        assert r.worker.failure is None
        assert r.worker.table("totals") == {
            "a": AccountTotals(account_id="a", orders=2, amount=3.0)
        }
        await r.worker.commit()
        assert r.committed("orders") == {0: 3}
    [dead] = r.messages("shop-dlq")
    assert msgspec.json.decode(dead.value or b"", type=Order).amount == 10.0
    assert (POSITION_HEADER, mark) in list(dead.headers)
