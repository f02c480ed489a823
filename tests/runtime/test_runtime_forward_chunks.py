"""A `group_by` whose forwarding task is fused (only sync processors and filters before it)
reads whole chunks from its source buffer, and a fused loop (`runs()`) after it reads the
repartition topic back in chunks: per chunk, the forwarded elements are acked with one release
once their run is delivered, a filtered one at once, a dead-lettered one on its own once its
dead letter is delivered; commits never pass an element still in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import streamc_runtime.forward as forward_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtkit import Running, gated, release_topic, spy_acks
from streamc_runtime import App, Stream, Worker
from streamc_runtime.memory import MemoryTransport
from streamc_runtime.transport import TP


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _app(got: list[int]) -> App:
    app = App("g")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("g-rekeyed", key_type=str, value_type=int, partitions=1, internal=True)

    def check(v: int) -> int:
        if v == 4:
            raise ValueError("no 4")
        return v

    def odd_or_small(v: int) -> bool:
        return v < 6 or v % 2 == 1

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        rekey = stream.process(check).filter(odd_or_small).group_by(str, topic=rekeyed)
        async for run in rekey.runs():
            for v in run:
                got.append(v)

    return app


async def test_a_dead_letter_mid_chunk_holds_the_commit_and_the_rest_is_acked_as_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got: list[int] = []
    r = gated(_app(got), ["g-rekeyed", "g-dlq"])
    acks = spy_acks(monkeypatch)
    for i in range(10):  # one chunk of partition 0: 0..9
        r.produce("nums", i, key=f"k{i}", partition=0)
    async with r:
        await r.idle()
        state = r.worker.offsets.get(TP("nums", 0))
        # 4 dead-lettered, 6 and 8 filtered out, the other 7 forwarded: all undelivered.
        assert [msgspec.json.decode(m.value or b"") for m in r.messages("g-rekeyed")] == [
            0, 1, 2, 3, 5, 7, 9,
        ]  # fmt: skip
        assert [m.value for m in r.messages("g-dlq")] == [b"4"]
        assert state.committable() == 0
        assert state.in_flight == 7  # the forwarded 7 ...
        assert state.refs(4) == 1  # ... and 4, held alone by its dead letter
        # Filtered: one release for both; the dead letter: its own, on being sent.
        assert acks["nums", "release_members"] == 2
        assert acks["nums", "release"] == 0

        release_topic(r, "g-rekeyed")
        await _settle()
        # The forwarded 7 acked with one release; the dead letter still holds 4 alone.
        assert acks["nums", "release_members"] == 3
        assert state.in_flight == 0
        assert state.refs(4) == 1
        assert state.committable() == 4
        assert await r.worker.commit()
        assert r.committed("nums") == {0: 4}

        release_topic(r, "g-dlq")
        await _settle()
        assert state.committable() == 10
        assert acks["nums", "release"] == 1  # the dead letter's hold, on its delivery
        assert await r.worker.commit()
        assert r.committed("nums") == {0: 10}
        # Read back in one chunk and acked with one release, no per-message release.
        assert got == [0, 1, 2, 3, 5, 7, 9]
        assert acks["g-rekeyed", "release_members"] == 1
        assert acks["g-rekeyed", "release"] == 0
        assert r.committed("g-rekeyed") == {0: 7}
    dead = dict(r.messages("g-dlq")[0].headers)
    assert dead["streamc.source.offset"] == b"4"
    assert dead["streamc.error"] == b"no 4"


async def test_forwarded_chunks_cut_at_the_run_maximum_are_each_forwarded_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forward_module, "_RUN_MAX", 7)  # chunks of up to 50 get cut
    got: list[int] = []
    r = Running(_app(got))
    sizes: list[int] = []
    send_many = r.transport.send_many

    async def spy(topic: str, records: Any, timestamps: Any = None) -> Any:
        if topic == "g-rekeyed":
            sizes.append(len(records))
        return await send_many(topic, records, timestamps)

    r.transport.send_many = spy  # type: ignore[method-assign]
    for i in range(40):
        r.produce("nums", i, key=f"k{i}", partition=0)
    async with r:
        await r.idle()
        assert await r.worker.commit()
    expected = [v for v in range(40) if v != 4 and (v < 6 or v % 2 == 1)]
    assert got == expected
    # 40 elements in runs of 7 at most: 6 runs of 7 then 5 (less those dropped in each run).
    assert len(sizes) == 6
    assert sum(sizes) == len(expected)
    assert r.committed("nums") == {0: 40}
    assert r.committed("g-rekeyed") == {0: len(expected)}


PARTS = 2

# What the forward does with an element (by its value): 0 forward, 1 its processor raises,
# 2 filtered out.
_ACTIONS = st.sampled_from([0, 0, 0, 1, 2])

_Scenario = tuple[list[tuple[int, int, bool]], int | None, int | None, int, bool, int]


@st.composite
def _scenarios(draw: st.DrawFn) -> _Scenario:
    n = draw(st.integers(1, 130))
    inputs = [
        (draw(st.integers(0, PARTS - 1)), draw(_ACTIONS), draw(st.booleans()) and i % 7 == 3)
        for i in range(n)
    ]
    rebalance_at = draw(st.none() | st.integers(0, n - 1))
    stop_at = draw(st.none() | st.integers(0, n - 1))
    buffer_size = draw(st.sampled_from([1000, 8]))  # 8: back-pressure pauses and resumes
    second = draw(st.booleans())  # another agent reads the topic: chunks of one message
    run_max = draw(st.sampled_from([1000, 3]))  # 3: chunks cut, their rest left buffered
    return inputs, rebalance_at, stop_at, buffer_size, second, run_max


async def _scenario(
    inputs: list[tuple[int, int, bool]],
    rebalance_at: int | None,
    stop_at: int | None,
    buffer_size: int,
    second: bool,
) -> None:
    app = App("fwd-prop")
    src = app.topic("src", value_type=int, partitions=PARTS)
    rekeyed = app.topic("fwd-prop-rekeyed", key_type=str, value_type=int, internal=True)
    actions = {i: action for i, (_, action, _) in enumerate(inputs)}
    where: dict[int, tuple[int, int]] = {}  # value -> (partition, offset)
    # Offsets whose forward or dead letter waits for the gated deliveries, and those done.
    undone: dict[int, set[int]] = {p: set() for p in range(PARTS)}
    handled: dict[int, set[int]] = {p: set() for p in range(PARTS)}
    r = gated(
        app, ["fwd-prop-rekeyed", "fwd-prop-dlq"], revoke_timeout=0.01, buffer_size=buffer_size
    )
    stopping = asyncio.Event()
    other: list[MemoryTransport] = []
    tasks: list[asyncio.Task[None]] = []
    released = False

    async def rebalance() -> None:
        # A second member takes a partition away, then leaves: it comes back from the commit.
        t = MemoryTransport(r.broker, app.name)
        other.append(t)
        t._topics = frozenset({"src"})
        r.broker._join(t)
        await asyncio.sleep(0.05)
        r.broker._leave(t)

    def step(value: int) -> int:
        p, o = where[value]
        if value == rebalance_at and not other:
            tasks.append(asyncio.ensure_future(rebalance()))
        if value == stop_at:
            stopping.set()
        if actions[value] == 1:
            undone[p].add(o)
            raise ValueError("bad")
        if actions[value] == 0:
            undone[p].add(o)
        else:
            handled[p].add(o)
        return value

    @app.agent(src)
    async def agent(stream: Stream[int]) -> None:
        rekey = stream.process(step).filter(lambda v: actions[v] != 2)
        async for run in rekey.group_by(lambda v: f"k{v % 3}", topic=rekeyed).runs():
            for _ in run:
                pass

    if second:

        @app.agent(src)
        async def plain(stream: Stream[int]) -> None:
            async for _ in stream:
                pass

    violations: list[str] = []
    commit = r.transport.commit

    def done(p: int, o: int) -> bool:
        return o in handled[p] or (released and o in undone[p])

    async def checked_commit(offsets: dict[TP, int]) -> None:
        for tp, c in offsets.items():
            if tp.topic == "src":
                violations.extend(
                    f"{tp}: commit {c} passes {o}" for o in range(c) if not done(tp.partition, o)
                )
        await commit(offsets)

    flush = r.transport.flush

    async def releasing_flush() -> None:  # the stop's flush lets the gated deliveries through
        nonlocal released
        released = True
        await flush()

    r.transport.commit = checked_commit  # type: ignore[method-assign]
    r.transport.flush = releasing_flush  # type: ignore[method-assign]
    async with r:
        counts = [0] * PARTS
        for i, (p, _, bad) in enumerate(inputs):
            where[i] = (p, counts[p])
            if bad:
                handled[p].add(counts[p])  # dead-lettered on arrival, before any fan-out
                r.produce("src", b"not json", partition=p, raw=True)
            else:
                r.produce("src", i, partition=p)
            counts[p] += 1
        idle = asyncio.ensure_future(r.idle())
        stopped = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([idle, stopped], return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            idle.cancel()
            await r.worker.stop()  # its final commit is checked like any other
            await asyncio.gather(*tasks)
            assert violations == []
            return
        stopped.cancel()
        await idle
        await asyncio.gather(*tasks)
        await r.idle()
        await r.worker.commit()
        released = True
        r.transport.release()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == dict(enumerate(counts))
    assert violations == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_a_forward_over_chunks_never_commits_past_an_element_not_done(
    scenario: _Scenario,
) -> None:
    *rest, run_max = scenario
    run_max_was = forward_module._RUN_MAX
    forward_module._RUN_MAX = run_max
    try:
        asyncio.run(asyncio.wait_for(_scenario(*rest), 30))
    finally:
        forward_module._RUN_MAX = run_max_was


async def test_a_record_too_large_in_a_forwarded_chunk_is_dead_lettered_alone() -> None:
    app = App("big")
    words = app.topic("words", key_type=str, value_type=str)
    rekeyed = app.topic("big-rekeyed", key_type=str, value_type=str, internal=True)
    got: list[str] = []

    @app.agent(words, name="a")
    async def regroup(stream: Stream[str]) -> None:
        async for run in stream.group_by(lambda w: w[:1], topic=rekeyed).runs():
            got.extend(run)

    r = Running(app)
    r.transport = MemoryTransport(r.broker, app.name, max_record_size=2000)
    r.worker = Worker(app, r.transport, stats_interval=0, commit_interval=60.0)
    sent = ["a1", "b2", "c" * 3000, "d4", "e5"]  # one chunk; the third cannot be produced
    for word in sent:
        r.produce("words", word, key="k")
    async with r:
        await r.idle()
        assert r.worker.failure is None
        assert await r.worker.commit()
        assert r.committed("words") == {0: 5}
    assert got == ["a1", "b2", "d4", "e5"]
    assert [m.key for m in r.messages("big-rekeyed")] == [b"a", b"b", b"d", b"e"]
    (dead,) = r.messages("big-dlq")
    headers = dict(dead.headers)
    assert headers["streamc.source.offset"] == b"2"
    assert headers["streamc.error.type"].endswith(b"RecordTooLargeError")


async def test_a_revocation_commits_the_forwarded_part_of_a_cut_chunk_not_its_abandoned_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The forward takes 0..2 of the chunk 0..9 (cut at the run maximum) and waits on 2's
    # hook when partition 1 is revoked: the rest 3..9 is abandoned. Once 0..2 are forwarded
    # the revocation's commit covers them, as it would have event by event; the new owner
    # must not forward them again.
    monkeypatch.setattr(forward_module, "_RUN_MAX", 3)
    app = App("cut")
    nums = app.topic("nums", key_type=str, value_type=int, partitions=2)
    rekeyed = app.topic("cut-rekeyed", key_type=str, value_type=int, partitions=1, internal=True)
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def slow_two(v: int) -> Any:
        return gate if v == 2 else v

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for run in stream.process(slow_two).group_by(str, topic=rekeyed).runs():
            for _ in run:
                pass

    r = Running(app, revoke_timeout=5.0)
    for i in range(10):
        r.produce("nums", i, key=f"k{i}", partition=1)
    other = MemoryTransport(r.broker, app.name)
    other._topics = frozenset({"nums"})
    async with r:
        source = r.worker.sources["a"]
        await _until(lambda: len(r.messages("cut-rekeyed")) == 2)  # 0, 1 out; 2's hook waits
        r.broker._join(other)  # takes partition 1
        await _until(lambda: source.size == 0)  # the rest 3..9 abandoned
        gate.set_result(2)
        await _until(lambda: TP("nums", 1) not in r.worker.offsets.partitions)
        assert [msgspec.json.decode(m.value or b"") for m in r.messages("cut-rekeyed")] == [
            0, 1, 2,
        ]  # fmt: skip
        assert r.committed("nums") == {0: 0, 1: 3}
        r.broker._leave(other)


async def test_a_stop_commits_the_forwarded_part_of_a_cut_chunk_not_its_dropped_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on revocation: the stop drops the rest 3..9 of the cut chunk, the forward finishes
    # 0..2, and the stop's commit covers them (the next owner starts at 3).
    monkeypatch.setattr(forward_module, "_RUN_MAX", 3)
    app = App("cutstop")
    nums = app.topic("nums", key_type=str, value_type=int)
    rekeyed = app.topic("cutstop-rekeyed", key_type=str, value_type=int, internal=True)
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def slow_two(v: int) -> Any:
        return gate if v == 2 else v

    @app.agent(nums, name="a")
    async def regroup(stream: Stream[int]) -> None:
        async for run in stream.process(slow_two).group_by(str, topic=rekeyed).runs():
            for _ in run:
                pass

    r = Running(app)
    for i in range(10):
        r.produce("nums", i, key=f"k{i}")
    async with r:
        source = r.worker.sources["a"]
        await _until(lambda: len(r.messages("cutstop-rekeyed")) == 2)  # 2's hook waits
        stopping = asyncio.ensure_future(r.worker.stop())
        await _until(lambda: source.closed)  # the rest 3..9 dropped
        gate.set_result(2)
        await stopping
    assert [msgspec.json.decode(m.value or b"") for m in r.messages("cutstop-rekeyed")] == [
        0, 1, 2,
    ]  # fmt: skip
    assert r.committed("nums") == {0: 3}


async def _until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never came to be")
