"""Property tests of windows (hypothesis), against a model written from the definitions:
an event lands in exactly the windows its timestamp belongs to; sessions merge and split
the same whatever the arrival order; a final row is never emitted twice; the late events
are exactly those whose every window was past its grace when they arrived."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamc_runtime import Hopping, Session, Tumbling
from streamc_runtime.local import run_local
from streamc_runtime.records import value_codec
from windowkit import UserWindow, rows, windows_app

_decode = value_codec(UserWindow).decode
_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20_000)), min_size=1, max_size=40
)
_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(app: Any, events: list[tuple[str, int]]) -> Any:
    lines = [{"key": u, "value": {"user": u}, "timestamp": t} for u, t in events]
    # run_local produces in timestamp order: disorder is tested with the timestamp field below
    return asyncio.run(run_local(app, {"clicks": lines}))


def _finals(broker: Any) -> list[tuple[str, int, int, int]]:
    return rows([_decode(m.value) for m in broker.messages("user_windows")])


def _fixed_model(
    events: list[tuple[str, int]], size: int, advance: int
) -> Counter[tuple[str, int, int]]:
    counts: Counter[tuple[str, int, int]] = Counter()
    for user, t in events:
        # every multiple of advance (before the epoch too) with s <= t < s + size
        for start in range(-size - size % advance, t + 1, advance):
            if start <= t < start + size:
                counts[(user, start, start + size)] += 1
    return counts


@_settings
@given(events=_events, shape=st.sampled_from([(1000, 1000), (3000, 1000), (4000, 2000)]))
def test_every_event_lands_in_exactly_the_windows_its_timestamp_belongs_to(
    events: list[tuple[str, int]], shape: tuple[int, int]
) -> None:
    size, advance = shape
    window = Tumbling(size=size) if size == advance else Hopping(size=size, advance=advance)
    broker = _run(windows_app(window, emit="final", partitions=1), events)
    finals = _finals(broker)
    assert len(finals) == len({(u, s) for u, s, _, _ in finals})  # never twice
    assert {(u, s, e): n for u, s, e, n in finals} == dict(_fixed_model(events, size, advance))


def _sessions_model(events: list[tuple[str, int]], gap: int) -> set[tuple[str, int, int, int]]:
    out: set[tuple[str, int, int, int]] = set()
    for user in {u for u, _ in events}:
        times = sorted(t for u, t in events if u == user)
        first = last = times[0]
        count = 1
        for t in times[1:]:
            if t - last > gap:
                out.add((user, first, last + gap, count))
                first, count = t, 0
            last = t
            count += 1
        out.add((user, first, last + gap, count))
    return out


@_settings
@given(events=_events, gap=st.sampled_from([500, 1500, 4000]))
def test_sessions_merge_and_split_the_same_under_out_of_order_input(
    events: list[tuple[str, int]], gap: int
) -> None:
    # Arrival order = list order (event time from the record's field, all messages at 0),
    # with a grace larger than any disorder: nothing is late.
    app = windows_app(
        Session(gap=gap, grace=30_000), emit="final", partitions=1, timestamp_field="at"
    )
    lines = [
        {"key": u, "value": {"user": u, "at": t}, "timestamp": 0, "partition": 0}
        for u, t in events
    ]
    broker = asyncio.run(run_local(app, {"clicks": lines}))
    finals = _finals(broker)
    assert len(finals) == len(set(finals))  # never twice
    assert set(finals) == _sessions_model(events, gap)
    assert broker.messages("clicks-dlq") == []


@_settings
@given(events=_events, grace=st.sampled_from([0, 700, 2500]))
def test_the_late_events_are_exactly_those_past_the_grace_period(
    events: list[tuple[str, int]], grace: int
) -> None:
    size = 1000
    app = windows_app(
        Tumbling(size=size, grace=grace), emit="final", partitions=1, timestamp_field="at"
    )
    lines = [
        {"key": u, "value": {"user": u, "at": t}, "timestamp": 0, "partition": 0}
        for u, t in events
    ]
    broker = asyncio.run(run_local(app, {"clicks": lines}))
    clock = -1
    late: list[int] = []
    kept: list[tuple[str, int]] = []
    for i, (user, t) in enumerate(events):
        end = t - t % size + size
        if end + grace <= clock:
            late.append(i)
        else:
            kept.append((user, t))
        clock = max(clock, t)
    dead = broker.messages("clicks-dlq")
    assert [dict(m.headers)["streamc.error.type"] for m in dead] == [b"late"] * len(late)
    assert [int(dict(m.headers)["streamc.position"].rsplit(b":", 1)[1]) for m in dead] == late
    finals = _finals(broker)
    assert len(finals) == len({(u, s) for u, s, _, _ in finals})
    assert {(u, s, e): n for u, s, e, n in finals} == dict(_fixed_model(kept, size, size))
