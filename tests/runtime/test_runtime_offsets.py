"""Offset tracking: never commit past a message in flight, whatever the ack order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from streamc_runtime.offsets import OffsetTracker, PartitionOffsets
from streamc_runtime.transport import TP

TP0 = TP("t", 0)


def test_in_order_acks_commit_everything() -> None:
    p = PartitionOffsets(TP0)
    for o in range(5):
        p.add(o, 1)
    assert p.committable() == 0
    for o in range(5):
        p.release(o)
        assert p.committable() == o + 1


def test_out_of_order_acks_hold_at_the_first_unfinished() -> None:
    p = PartitionOffsets(TP0)
    for o in range(5):
        p.add(o, 1)
    for o in (4, 2, 3):
        p.release(o)
        assert p.committable() == 0
    p.release(1)
    assert p.committable() == 0
    p.release(0)
    assert p.committable() == 5


def test_gaps_in_offsets() -> None:
    p = PartitionOffsets(TP0)
    for o in (3, 7, 8, 20):
        p.add(o, 1)
    p.release(7)
    assert p.committable() == 3
    p.release(3)
    assert p.committable() == 8
    p.release(8)
    p.release(20)
    assert p.committable() == 21


def test_refcounts_and_holds() -> None:
    p = PartitionOffsets(TP0)
    p.add(0, 2)
    p.add(1, 0)  # nobody subscribed: done on arrival
    assert p.refs(0) == 2
    p.release(0)
    p.hold(0)  # e.g. a forward not yet delivered
    p.release(0)
    assert p.committable() == 0
    p.release(0)
    assert p.committable() == 2
    p.release(0)  # an extra release is harmless
    assert p.committable() == 2


def test_to_commit_only_when_moved() -> None:
    t = OffsetTracker()
    state = t.get(TP0)
    state.add(0, 1)
    assert t.to_commit() == {TP0: 0}
    t.mark_committed({TP0: 0})
    assert t.to_commit() == {}
    state.release(0)
    assert t.to_commit() == {TP0: 1}


def test_forgotten_partition_ignores_late_acks() -> None:
    t = OffsetTracker()
    state = t.get(TP0)
    state.add(0, 1)
    t.forget({TP0})
    state.release(0)  # no error
    assert TP0 not in t.partitions


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], int]:
    gaps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=60))
    offsets = []
    o = draw(st.integers(0, 5))
    for g in gaps:
        offsets.append(o)
        o += g
    refs = [draw(st.integers(0, 3)) for _ in offsets]
    releases = [i for i, r in enumerate(refs) for _ in range(r)]
    order = draw(st.permutations(releases))
    crash = draw(st.integers(0, len(order)))
    return offsets, refs, list(order), crash


@settings(max_examples=300, deadline=None)
@given(_scenarios())
def test_committed_never_passes_an_unfinished_message(
    scenario: tuple[list[int], list[int], list[int], int],
) -> None:
    offsets, refs, order, crash = scenario
    p = PartitionOffsets(TP0)
    outstanding = dict.fromkeys(range(len(offsets)), 0)
    for i, (o, r) in enumerate(zip(offsets, refs, strict=True)):
        p.add(o, r)
        outstanding[i] = r
    committed: int | None = None
    for step, i in enumerate(order):
        if step == crash:
            break
        p.release(offsets[i])
        outstanding[i] -= 1
        offset = p.to_commit()
        if offset is not None:
            committed = offset
            p.committed = offset
        # the invariant at every instant: everything below the committed offset is finished
        if committed is not None:
            assert all(outstanding[j] == 0 for j, o in enumerate(offsets) if o < committed)
    if crash >= len(order):  # everything finished: everything committed
        assert p.committable() == offsets[-1] + 1


def test_abandoned_references_block_commits_but_not_busy() -> None:
    p = PartitionOffsets(TP0)
    p.add(0, 2)
    p.add(1, 1)
    p.abandon(0)  # one subscriber's copy dropped on revocation
    assert p.busy()
    p.release(0)  # the other subscriber finished
    p.release(1)
    assert not p.busy()
    assert p.committable() == 0  # the dropped copy was never handled: not committed
