"""`distinct` across crashes at any record (as the tables and windows crash tests: a transport
that dies after a budget of stored records, then the next worker takes over from the committed
offsets): the state the changelog restores is the model's (each key's last let-through event
time, expired entries aside), without a crash exactly the model's elements pass, and with
crashes each of them at least once and no other (a replay passes on what the crashed run let
through, and only that)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc_runtime import Worker
from streamc_runtime.local import until_quiescent
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.state import POSITIONS_KEY
from streamc_runtime.state.changelog import POSITION_HEADER, POSITIONS_HEADER
from streamc_runtime.state.distinct import Seen
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
            seen = msgspec.json.decode(m.value, type=int | Seen)
            state[m.key.decode()] = seen if isinstance(seen, int) else seen.time
    return state


async def _scenario(budgets: list[int], events: list[tuple[str, int]]) -> list[int]:
    """Runs dying after each budget of records, then one that does not; the offsets passed
    on, in output order."""
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
    assert set(out) == passed  # with crashes: each let through at least once, no other
    assert broker.committed("dedup", TP("clicks", 0)) == len(events)
    return out


_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000)), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events, budgets=st.lists(st.integers(0, 80), min_size=1, max_size=3))
def test_distinct_state_is_exact_after_crashes_its_output_exact_without_at_least_once_with(
    events: list[tuple[str, int]], budgets: list[int]
) -> None:
    asyncio.run(_scenario(budgets, events))


async def test_an_element_let_through_in_a_crashed_run_is_passed_on_after_the_replay() -> None:
    # a@0 and a@1000 both pass; the crash keeps both changelog records (a = 1000) but loses
    # the outputs and the commit: the replay of a@0 must find it was let through
    assert await _scenario([2], [("a", 0), ("a", 1000)]) == [0, 1]


async def test_each_element_of_a_chain_let_through_in_a_crashed_run_is_passed_on_again() -> None:
    # a@1500 is dropped (within 1000 of a@1000); the others pass and overwrite one another
    events = [("a", 0), ("a", 1000), ("a", 1500), ("a", 2000), ("a", 3000)]
    assert await _scenario([4], events) == [0, 1, 3, 4]


async def test_an_element_let_through_whose_entry_expired_in_the_crashed_run_is_passed_on() -> None:
    # b@5000 raises stream time past a@0's expiry, which tombstoned a's entry in the crashed
    # run (a's output, the run's first, was delivered: a replay passes it on again)
    assert await _scenario([4], [("a", 0), ("b", 5000)]) == [0, 0, 1]


async def test_a_replayed_duplicate_with_the_time_let_through_is_not_passed_on() -> None:
    # a@0 twice: the second is dropped, and stays dropped on replay though its time matches
    # (b@0, let through after it, makes the crashed run's skip map cover it)
    assert await _scenario([3], [("a", 0), ("a", 0), ("b", 0)]) == [0, 2]


async def test_a_changelog_of_bare_times_restores_and_decides_as_before() -> None:
    # a changelog written before entries kept positions: a's value is its time alone
    app = dedup_app()
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions, topic.config)
    for offset, t in enumerate([0, 500, 1000]):
        broker.produce("clicks", msgspec.json.encode(Click(user=str(offset))), b"a", (), 0, t)
    broker.create_topic(CHANGELOG, 2, {"cleanup.policy": "compact"})
    position = ((POSITION_HEADER, b"clicks:0:0"),)
    broker.produce(CHANGELOG, b"0", b"a", position, 0, 0)
    broker.produce(
        CHANGELOG,
        b'{"clicks:0":0,"streamc.stream_time":0}',
        POSITIONS_KEY,
        ((POSITIONS_HEADER, b"1"),),
        0,
        0,
    )
    await _run(app, MemoryTransport(broker, "dedup"))
    out = [int(msgspec.json.decode(m.value, type=Click).user) for m in broker.messages("unique")]
    # a@0, a replay with the stored time, passes again; a@500 is within 1000 of it
    assert out == [0, 2]
    assert broker.messages(CHANGELOG)[-2].value == b'[1000,"clicks:0:2",[]]'
    assert _restored(broker) == {"a": 1000}
