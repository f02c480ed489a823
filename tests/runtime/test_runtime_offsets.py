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


def test_a_run_is_registered_and_acked_as_one_entry() -> None:
    p = PartitionOffsets(TP0)
    key = p.add_run(10, 15, 5)  # offsets 10-15, one of them a gap (compaction)
    assert len(p._pending) == 1
    assert p.in_flight == 5
    assert p.committable() == 10
    p.release_members(key, 2)
    assert p.committable() == 10
    p.release(11)  # a member's own offset is not the run's entry: nothing changes
    assert p.committable() == 10 and p.in_flight == 3
    p.release_members(key, 3)
    assert p.committable() == 16
    assert not p._pending and not p._refs


def test_a_run_acked_while_a_member_is_held_commits_up_to_that_member() -> None:
    p = PartitionOffsets(TP0)
    key = p.add_run(0, 4, 5)
    p.add(5, 1)
    p.hold(2)  # element 2 raised: its dead letter is not delivered yet
    p.release_members(key, 5)  # the run's ack
    p.release(5)
    assert p.committable() == 2
    assert p.busy()
    p.release(2)  # the dead letter is delivered
    assert p.committable() == 6
    assert not p.busy()


def test_a_hold_on_a_runs_first_member_is_its_own() -> None:
    p = PartitionOffsets(TP0)
    key = p.add_run(0, 2, 3)
    p.hold(0)
    p.release_members(key, 3)
    assert p.committable() == 0
    p.release(0)
    assert p.committable() == 3


def test_advancing_a_run_makes_its_done_members_committable() -> None:
    p = PartitionOffsets(TP0)
    key = p.add_run(0, 9, 10)
    p.release_members(key, 3)  # a fused loop's flush: elements 0-2 done
    key = p.advance_run(key, 3)
    assert p.committable() == 3
    p.release_members(key, 7)
    assert p.committable() == 10


def test_revoking_a_partition_with_a_registered_run() -> None:
    tracker = OffsetTracker()
    p = tracker.get(TP0)
    key = p.add_run(0, 9, 10)
    p.release_members(key, 2)  # handled before the revocation
    key = p.advance_run(key, 2)
    p.abandon(key, 7)  # the rest the loop had not reached, dropped; element 2 still in hand
    assert p.busy()
    p.release_members(key, 1)  # the element in hand finishes
    assert not p.busy()
    assert tracker.to_commit() == {TP0: 2}  # what was dropped is left to the next owner
    tracker.forget({TP0})
    p.release_members(key, 7)  # late acks into the closed state change nothing
    p.hold(5)
    assert TP0 not in tracker.partitions
    assert not p.busy() and not p._inner


@st.composite
def _run_scenarios(draw: st.DrawFn) -> tuple[list[list[int]], set[int], list[int]]:
    runs: list[list[int]] = []
    offset = 0
    for _ in range(draw(st.integers(1, 5))):
        run = []
        for _ in range(draw(st.integers(1, 6))):
            run.append(offset)
            offset += draw(st.integers(1, 2))  # gaps
        runs.append(run)
    members = [o for run in runs for o in run]
    held = set(draw(st.lists(st.sampled_from(members), unique=True)))
    events = list(range(len(members) + len(held)))
    order = draw(st.permutations(events))
    return runs, held, list(order)


@settings(max_examples=300, deadline=None)
@given(_run_scenarios())
def test_commit_never_passes_a_held_or_unacked_member_of_a_run(
    scenario: tuple[list[list[int]], set[int], list[int]],
) -> None:
    runs, held, order = scenario
    p = PartitionOffsets(TP0)
    key_of: dict[int, int] = {}
    for run in runs:
        key = p.add_run(run[0], run[-1], len(run))
        key_of.update(dict.fromkeys(run, key))
    members = sorted(key_of)
    for o in held:  # holds are taken while the element is in hand, before any ack
        p.hold(o)
    unfinished = {o: 1 + (o in held) for o in members}
    held_list = sorted(held)
    for i in order:
        if i < len(members):  # a member's own ack: one of its run's references
            o = members[i]
            p.release_members(key_of[o], 1)
        else:  # a hold's release (its send delivered)
            o = held_list[i - len(members)]
            p.release(o)
        unfinished[o] -= 1
        committable = p.committable()
        assert committable is not None
        assert all(n == 0 for o2, n in unfinished.items() if o2 < committable)
    assert p.committable() == runs[-1][-1] + 1
    assert not p.busy()
