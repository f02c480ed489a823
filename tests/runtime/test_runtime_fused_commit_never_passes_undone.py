"""A fused loop straight from its source (runs of `Chunk`s, one offset entry per run): whatever
mix of interleaved partitions, undecodable messages, raising elements, sends held until
delivered, flushes before an await, and a rebalance that takes a partition away and gives it
back, the committable offset of a partition never passes an element that is not done (not
handled yet, or whose send or dead letter is not delivered)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtkit import gated
from streamc_runtime import App, Stream
from streamc_runtime.memory import MemoryTransport
from streamc_runtime.transport import TP

PARTS = 2

# What the loop does with an element (by its value): 0 nothing, 1 raise, 2 send, 3 flush and
# wait a loop turn before handling it, 4 send then flush and wait.
_ACTIONS = st.sampled_from([0, 0, 0, 1, 2, 3, 4])


_Scenario = tuple[list[tuple[int, int, bool]], int | None, int | None, int, bool]


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
    return inputs, rebalance_at, stop_at, buffer_size, second


async def _scenario(
    inputs: list[tuple[int, int, bool]],
    rebalance_at: int | None,
    stop_at: int | None,
    buffer_size: int,
    second: bool,
) -> None:
    app = App("fused-prop")
    src = app.topic("src", value_type=int, partitions=PARTS)
    out = app.topic("out", value_type=int, partitions=1)
    actions = {i: action for i, (_, action, _) in enumerate(inputs)}
    # (partition, offset) of each value produced, and the offsets never done before release
    where: dict[int, tuple[int, int]] = {}
    undone: dict[int, set[int]] = {p: set() for p in range(PARTS)}  # sent / dead-lettered
    handled: dict[int, set[int]] = {p: set() for p in range(PARTS)}
    r = gated(app, ["out", "fused-prop-dlq"], revoke_timeout=0.01, buffer_size=buffer_size)
    stopping = asyncio.Event()
    violations: list[str] = []
    other: list[MemoryTransport] = []
    released = False  # the gated deliveries were let through: undone elements are done

    def check(in_hand: tuple[int, int] | None) -> None:
        for p in range(PARTS):
            state = r.worker.offsets.partitions.get(TP("src", p))
            if state is None:
                continue
            c = state.committable()
            if c is None:
                continue
            for o in range(state.start or 0, c):
                if o in undone[p] or o not in handled[p] or in_hand == (p, o):
                    violations.append(f"p{p}: committable {c} passes {o}")

    async def rebalance() -> None:
        # A second member takes a partition away, then leaves: it comes back from the commit.
        t = MemoryTransport(r.broker, app.name)
        other.append(t)
        t._topics = frozenset({"src"})
        r.broker._join(t)
        await asyncio.sleep(0.05)
        r.broker._leave(t)

    @app.agent(src)
    async def agent(stream: Stream[int]) -> None:
        async for run in stream.runs():
            for value in run:
                action = actions[value]
                at = where[value]
                check(at)
                if action in (3, 4):
                    if action == 4:
                        run.send(out, value)
                        undone[at[0]].add(at[1])
                    await run.flush()
                    await asyncio.sleep(0)
                    check(at)
                if value == rebalance_at and not other:  # once: it is read again after
                    await run.flush()
                    await rebalance()
                    check(at)
                if value == stop_at and not stopping.is_set():
                    stopping.set()  # the worker stops with this element in hand
                    await asyncio.sleep(0.01)
                    check(at)
                if action == 1:
                    undone[at[0]].add(at[1])
                    raise ValueError("bad")
                if action == 2:
                    run.send(out, value)
                    undone[at[0]].add(at[1])
                handled[at[0]].add(at[1])

    commit = r.transport.commit

    def done(p: int, o: int) -> bool:
        # Handled, or dead-lettered on arrival or by a raise; whatever it sent delivered.
        return (o in handled[p] or o in undone[p]) and (released or o not in undone[p])

    async def checked_commit(offsets: dict[TP, int]) -> None:
        for tp, c in offsets.items():
            for o in range(c):
                if not done(tp.partition, o):
                    violations.append(f"{tp}: commit {c} passes {o}")
        await commit(offsets)

    flush = r.transport.flush

    async def releasing_flush() -> None:  # the stop's flush lets the gated deliveries through
        nonlocal released
        released = True
        await flush()

    r.transport.commit = checked_commit  # type: ignore[method-assign]
    r.transport.flush = releasing_flush  # type: ignore[method-assign]

    if second:

        @app.agent(src)
        async def plain(stream: Stream[int]) -> None:
            async for _ in stream:
                pass

    async with r:
        counts = [0] * PARTS
        for i, (p, _, bad) in enumerate(inputs):
            where[i] = (p, counts[p])
            if bad:
                undone[p].add(counts[p])
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
            assert violations == []
            return
        stopped.cancel()
        await idle
        await asyncio.sleep(0.01)
        check(None)
        await r.worker.commit()
        for p, c in r.committed("src").items():
            for o in range(c):
                if o in undone[p]:
                    violations.append(f"p{p}: committed {c} passes {o}")
        released = True
        r.transport.release()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        await r.idle()
        await r.worker.commit()
        assert r.committed("src") == dict(enumerate(counts))
    assert violations == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_a_fused_loop_never_commits_past_an_element_not_done(
    scenario: _Scenario,
) -> None:
    asyncio.run(asyncio.wait_for(_scenario(*scenario), 30))
