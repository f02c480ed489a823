"""`distinct` across crashes at any record (as the tables and windows crash tests: a transport
that dies after a budget of stored records, then the next worker takes over from the committed
offsets): the state the changelog restores is the model's (each key's last let-through event
time, expired entries aside), and without a crash exactly the model's elements pass. Passed on
at least once after a crash: not yet (the xfail test below)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc_runtime import Worker
from streamc_runtime.local import until_quiescent
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.state import POSITIONS_KEY
from streamc_runtime.transport import TP
from test_runtime_distinct import CHANGELOG, dedup_app
from test_runtime_tables_crash import DyingTransport
from windowkit import Click

WITHIN = 1000  # dedup_app's


async def _run(app: Any, transport: MemoryTransport) -> None:
    worker = Worker(
        app,
        transport,
        stats_interval=0,
        commit_interval=0.002,
        send_attempts=1,
        shutdown_timeout=0.5,
    )
    await worker.start()
    try:
        await asyncio.wait_for(until_quiescent(worker), 10)
    finally:
        await worker.stop()


def _model(events: list[tuple[str, int]]) -> tuple[set[int], dict[str, int]]:
    """The offsets let through, and the live entries left (key -> event time let through
    last, unexpired: time + WITHIN past the final stream time)."""
    seen: dict[str, int] = {}
    clock = -(2**62)
    passed = set()
    for offset, (key, t) in enumerate(events):
        last = seen.get(key)
        if last is None or abs(t - last) >= WITHIN or last + WITHIN <= clock:
            passed.add(offset)
            seen[key] = t
        clock = max(clock, t)
    return passed, _live(seen, clock)


def _live(state: dict[str, int], clock: int) -> dict[str, int]:
    return {k: s for k, s in state.items() if s + WITHIN > clock}


def _restored(broker: MemoryBroker) -> dict[str, int]:
    """What a restore of the changelog gives: the last record of each key, tombstones drop."""
    state: dict[str, int] = {}
    for m in broker.messages(CHANGELOG):
        if m.key is None or m.key == POSITIONS_KEY:
            continue
        if m.value is None:
            state.pop(m.key.decode(), None)
        else:
            state[m.key.decode()] = msgspec.json.decode(m.value)
    return state


async def _scenario(
    budgets: list[int], events: list[tuple[str, int]], at_least_once: bool = False
) -> None:
    app = dedup_app()
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    # One input partition: the arrival order, hence what is a duplicate, is the offsets'.
    # Each value names its offset, so what passed can be told apart.
    for offset, (key, t) in enumerate(events):
        value = msgspec.json.encode(Click(user=str(offset)))
        broker.produce("clicks", value, key.encode(), (), 0, t)
    for budget in budgets:
        await _run(app, DyingTransport(broker, "dedup", budget))
    await _run(app, MemoryTransport(broker, "dedup"))
    passed, state = _model(events)
    out = [int(msgspec.json.decode(m.value, type=Click).user) for m in broker.messages("unique")]
    clock = max(t for _, t in events)
    assert _live(_restored(broker), clock) == state
    if not any(budgets):
        assert sorted(out) == sorted(passed)  # without a crash: exactly once
    if at_least_once:
        assert passed <= set(out)  # with crashes: each let through at least once
    assert broker.committed("dedup", TP("clicks", 0)) == len(events)


_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000)), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events, budgets=st.lists(st.integers(0, 80), min_size=1, max_size=3))
def test_distinct_state_is_exact_after_crashes_and_its_output_exact_without(
    events: list[tuple[str, int]], budgets: list[int]
) -> None:
    asyncio.run(_scenario(budgets, events))


@pytest.mark.xfail(
    strict=True,
    reason="known gap: a replayed element that was let through, whose entry a later element "
    "of the crashed run overwrote, is taken for a dropped one and never passed on",
)
async def test_an_element_let_through_in_a_crashed_run_is_passed_on_after_the_replay() -> None:
    # a@0 and a@1000 both pass; the crash keeps both changelog records (a = 1000) but loses
    # the outputs and the commit: the replay of a@0 finds a = 1000 and drops it
    await _scenario([2], [("a", 0), ("a", 1000)], at_least_once=True)
