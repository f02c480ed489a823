"""`take(n, within)` batches (never empty, at most n, a partial batch out at most `within`
after its first element), a body raising on a batch, and `run_local` on chains of through, take
and group_by (terminates, drains partial batches, commits everything)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
from rtkit import Running, wait_for
from streamc_runtime import App, Event, Stream
from streamc_runtime.local import run_local
from streamc_runtime.transport import TP

# Timing asserts are one-sided and generous: a slow machine can only make a batch later than
# `within`, and SLACK absorbs that; a timer reset by later elements would be late by far more.
WITHIN = 0.15
SLACK = 0.5


async def test_a_partial_batch_goes_out_within_of_its_first_element_while_more_trickle_in() -> (
    None
):
    app = App("tk")
    nums = app.topic("nums", key_type=str, value_type=int)
    loop = asyncio.get_running_loop()
    produced: dict[int, float] = {}
    batches: list[tuple[float, list[int]]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for batch in stream.take(1000, within=WITHIN):
            batches.append((loop.time(), batch))

    async with Running(app, fetch_timeout=0.01) as r:
        # one element every WITHIN/4 for 4*WITHIN: a timer restarted by every element (or
        # waiting for n) would emit nothing until the trickle stops
        for i in range(16):
            produced[i] = loop.time()
            r.produce("nums", i)
            await asyncio.sleep(WITHIN / 4)
        trickle_end = loop.time()
        await wait_for(lambda: sum(len(b) for _, b in batches) == 16)
    assert any(t < trickle_end for t, _ in batches)  # emitted while elements kept coming
    assert [v for _, b in batches for v in b] == list(range(16))
    for t, batch in batches:
        assert 1 <= len(batch) <= 1000
        assert t - produced[batch[0]] <= WITHIN + SLACK


async def test_batches_never_exceed_n_and_are_never_empty() -> None:
    app = App("tk")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=3)
    batches: list[list[int]] = []

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        async for batch in stream.filter(lambda v: v % 3 != 0).take(4, within=0.02):
            batches.append(batch)

    async with Running(app, fetch_max=7) as r:
        for i in range(100):
            r.produce("nums", i, key=str(i))
        await wait_for(lambda: sum(len(b) for b in batches) == 66)
        await asyncio.sleep(0.1)  # several `within` periods with nothing: no empty batch
        await r.idle()
    assert all(1 <= len(b) <= 4 for b in batches)
    assert sorted(v for b in batches for v in b) == [i for i in range(100) if i % 3]
    assert r.committed("nums") == r.end_offsets("nums")


async def test_a_body_raising_on_a_batch_of_events_dead_letters_it_and_resumes_after_it() -> None:
    app = App("tb")
    nums = app.topic("nums", key_type=str, value_type=int)
    seen: list[list[int]] = []
    calls = 0

    @app.agent(nums)
    async def collect(stream: Stream[int]) -> None:
        nonlocal calls
        calls += 1
        async for events in stream.take(3).events():
            batch = cast(list[Event[Any, int]], events)  # after take: the batch's events
            seen.append([e.value for e in batch])
            if 4 in seen[-1]:
                raise RuntimeError("bad batch")

    async with Running(app) as r:
        for i in range(8):
            r.produce("nums", i)
        await r.idle()
        assert seen == [[0, 1, 2], [3, 4, 5]]
        assert r.worker.partial_batches() == 2  # 6 and 7 kept across the restart
        assert r.worker.offsets.get(TP("nums", 0)).committable() == 6
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert calls == 2
    assert [m.value for m in r.messages("tb-dlq")] == [b"3", b"4", b"5"]
    assert r.committed("nums") == {0: 8}


def _chain_app(kind: str) -> App:
    app = App("ch")
    src = app.topic("src", key_type=str, value_type=int, partitions=3)
    a = app.topic("a", key_type=str, value_type=int, partitions=2)
    b = app.topic("b", key_type=str, value_type=list[int], partitions=2)
    c = app.topic("c", key_type=str, value_type=list[list[int]], partitions=1)
    out = app.topic("out", key_type=str, value_type=Any, partitions=1)
    rep = app.topic("ch-ag-src-k-repartition", key_type=str, value_type=int, partitions=2)
    sink: list[Any] = []

    def bad(v: int) -> int:
        if v == 7:
            raise ValueError("seven")
        return v

    @app.agent(src, name="ag")
    async def agent(stream: Stream[int]) -> None:
        if kind == "through-take-through":
            s: Stream[Any] = stream.through(a).take(3, within=60).through(b)
        elif kind == "through-take-through-take-through":
            s = stream.through(a).take(3, within=60).through(b).take(2).through(c)
        elif kind == "group_by-take-through":
            s = stream.group_by(lambda v: str(v % 2), topic=rep).take(5, within=60).through(b)
        elif kind == "take-to":
            s = stream.take(4).to(out)
        elif kind == "process-take-through-echo":
            s = stream.process(bad).take(4, within=60).through(b).echo(out)
        else:
            s = stream.take(2).through(b).take(3)
        async for value in s:
            sink.append(value)

    @app.agent(b, name="reader")  # a second subscriber of an intermediate topic
    async def reader(stream: Stream[list[int]]) -> None:
        async for _ in stream:
            pass

    return app


@pytest.mark.parametrize(
    "kind",
    [
        "through-take-through",
        "through-take-through-take-through",
        "group_by-take-through",
        "take-to",
        "process-take-through-echo",
        "take-through-take",
    ],
)
async def test_run_local_terminates_and_drains_chains(kind: str) -> None:
    app = _chain_app(kind)
    inputs = {"src": [{"value": i, "key": f"k{i}"} for i in range(11)]}
    broker = await asyncio.wait_for(run_local(app, inputs), 10)
    for t in ("src", "a", "b", "c", "ch-ag-src-k-repartition"):
        for p in range(broker.partitions_for(t) or 0):
            tp = TP(t, p)
            assert (broker.committed("ch", tp) or 0) == broker.end_offset(tp), tp
    last = {
        "through-take-through": "b",
        "through-take-through-take-through": "c",
        "group_by-take-through": "b",
        "take-to": "out",
        "process-take-through-echo": "out",
        "take-through-take": "b",
    }[kind]
    values = _flat([msgspec.json.decode(m.value or b"null") for m in broker.messages(last)])
    expected = [i for i in range(11) if not (kind == "process-take-through-echo" and i == 7)]
    assert sorted(values) == expected


def _flat(x: Any) -> list[int]:
    return [y for z in x for y in _flat(z)] if isinstance(x, list) else [x]
