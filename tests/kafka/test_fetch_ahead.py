"""`KafkaTransport.fetch` taking all aiokafka holds and handing it out `max_records` at a time,
on a stand-in consumer: no broker needed.

After an idle fetch (and at first) it asks aiokafka for `max_records` only, otherwise for
everything (`max_records=None`). What it takes waits in `_fetched` and comes out in offset order
per partition; a paused partition's records wait for the resume, a revoked (or not yet ready)
partition's never come out, and nothing is lost or handed out twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition  # type: ignore[import-untyped]
from streamc_runtime.kafka import KafkaSettings, KafkaTransport, _RebalanceBridge
from streamc_runtime.transport import HANDOUT_RUN, TP, Message

pytestmark = pytest.mark.asyncio

A = TopicPartition("orders", 0)
B = TopicPartition("orders", 1)

Batch = dict[Any, list[Any]]
Step = Batch | Callable[[], Batch]


def records(tp: Any, offsets: Iterable[int]) -> list[Any]:
    """Real aiokafka records, as `getmany` returns them (raw bytes, no deserializer)."""
    out: list[Any] = []
    for offset in offsets:
        value = f"{tp.partition}:{offset}".encode()
        out.append(
            ConsumerRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                timestamp=1_700_000_000_000 + offset,
                timestamp_type=0,
                key=None,
                value=value,
                checksum=None,
                serialized_key_size=-1,
                serialized_value_size=len(value),
                headers=[],
            )
        )
    return out


class FakeConsumer:
    """`getmany` returns the scripted batches in turn (a step may be a callable, run during the
    call, e.g. to resume a partition "while aiokafka fetched"); asked for some partitions, only
    their part of the next batch. With nothing to return it behaves as aiokafka: it waits out
    the timeout and returns `{}`."""

    def __init__(self, assigned: Collection[Any]) -> None:
        self._assigned = frozenset(assigned)
        self._paused: set[Any] = set()
        self.script: deque[Step] = deque()
        self.asked: list[int | None] = []  # `max_records` of each getmany
        self.topups: list[tuple[frozenset[Any], int | None]] = []  # partition-bound getmany
        self.seeks: list[tuple[Any, int]] = []
        self.stopped = False

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Batch:
        if partitions:
            self.topups.append((frozenset(partitions), max_records))
        else:
            self.asked.append(max_records)
        if self.script:
            head = self.script[0]
            if callable(head):
                head = self.script[0] = head()
            if not partitions:
                self.script.popleft()
                return head
            # What aiokafka holds of these partitions (with `max_records`: the first ones of
            # each); the rest of the batch stays for a later getmany.
            out = {tp: head.pop(tp) for tp in partitions if tp in head}
            if max_records is not None:
                for tp, recs in list(out.items()):
                    out[tp], rest = recs[:max_records], recs[max_records:]
                    if rest:
                        head[tp] = rest
            if not head:
                self.script.popleft()
            if out or not timeout_ms:
                return out
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def paused(self) -> set[Any]:
        return set(self._paused)

    def pause(self, *tps: Any) -> None:
        for tp in tps:
            assert tp in self._assigned, tp  # aiokafka raises on unassigned partitions
        self._paused.update(tps)

    def resume(self, *tps: Any) -> None:
        for tp in tps:
            assert tp in self._assigned, tp
        self._paused.difference_update(tps)

    def assignment(self) -> frozenset[Any]:
        return self._assigned

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def stop(self) -> None:
        self.stopped = True


def transport(
    *ready: Any, assigned: Collection[Any] | None = None
) -> tuple[KafkaTransport, FakeConsumer]:
    t = KafkaTransport(KafkaSettings(bootstrap_servers=("localhost:9092",), group_id="g"))
    consumer = FakeConsumer(ready if assigned is None else assigned)
    t._consumer = consumer
    t._ready = frozenset(TP(tp.topic, tp.partition) for tp in ready)
    return t, consumer


def got(messages: Sequence[Message]) -> list[tuple[int, int]]:
    """(partition, offset) of each message, in the order handed out."""
    return [(m.partition, m.offset) for m in messages]


def of(tp: Any, offsets: Iterable[int]) -> list[tuple[int, int]]:
    return [(tp.partition, o) for o in offsets]


class StubListener:
    def __init__(self) -> None:
        self.revoked: list[frozenset[TP]] = []
        self.assigned: list[frozenset[TP]] = []

    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        self.revoked.append(frozenset(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        self.assigned.append(frozenset(assigned))


async def test_asks_for_max_records_when_idle_and_for_everything_otherwise() -> None:
    t, c = transport(A)
    c.script.extend([{A: records(A, range(0, 3))}, {A: records(A, range(3, 6))}, {}])
    c.script.append({A: records(A, [6])})

    assert got(await t.fetch(0, 500)) == of(A, range(0, 3))
    assert c.asked == [500]  # the first fetch: idle
    assert got(await t.fetch(0, 500)) == of(A, range(3, 6))
    assert c.asked == [500, None]  # not idle: everything aiokafka holds
    assert got(await t.fetch(0, 500)) == []
    assert c.asked == [500, None, None]
    assert got(await t.fetch(0, 500)) == of(A, [6])
    assert c.asked == [500, None, None, 500]  # after the empty one: idle again
    assert got(await t.fetch(0, 500)) == []
    assert c.asked == [500, None, None, 500, None]


async def test_one_large_getmany_is_handed_out_max_records_at_a_time() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, [0]), B: records(B, [0])})
    # 1200 records over two partitions from a single getmany (700 of A, 500 of B).
    c.script.append({A: records(A, range(1, 701)), B: records(B, range(1, 501))})

    assert got(await t.fetch(0, 500)) == of(A, [0]) + of(B, [0])
    first = got(await t.fetch(0, 500))
    assert c.asked == [500, None]
    second = got(await t.fetch(0, 500))
    third = got(await t.fetch(0, 500))
    assert c.asked == [500, None]  # no getmany until what it holds is handed out
    assert [len(first), len(second), len(third)] == [500, 500, 200]
    # In turns of HANDOUT_RUN (50) records per partition, each in offset order.
    assert first == [
        r for k in range(1, 251, 50) for r in of(A, range(k, k + 50)) + of(B, range(k, k + 50))
    ]
    assert second == [
        r for k in range(251, 501, 50) for r in of(A, range(k, k + 50)) + of(B, range(k, k + 50))
    ]
    assert third == of(A, range(501, 701))  # B has nothing left: A alone, in one run
    every = first + second + third
    assert sorted(every) == of(A, range(1, 701)) + of(B, range(1, 501))  # none lost or twice
    assert t._fetched == {}
    assert got(await t.fetch(0, 500)) == []
    assert c.asked == [500, None, None]


async def test_paused_partition_records_wait_for_the_resume_and_come_first() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, range(0, 6)), B: records(B, range(0, 6))})

    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    t.pause([TP("orders", 0)])
    assert got(await t.fetch(0, 4)) == of(B, range(0, 4))  # B flows meanwhile
    assert got(await t.fetch(0, 4)) == of(B, [4, 5])
    assert c.asked == [4]
    # Only A's held records left, and A is paused: what aiokafka holds of B is taken without
    # waiting (a top-up of the partitions with nothing held)...
    c.script.append({B: records(B, range(6, 9))})
    assert got(await t.fetch(0, 4)) == of(B, range(6, 9))
    assert c.asked == [4]
    assert c.topups[-1] == (frozenset({B}), None)
    # ...and with nothing there either, aiokafka is asked for B only (and waited for): it
    # would drop what it has prefetched of A if asked while A is paused.
    assert got(await t.fetch(0, 4)) == []  # still paused: nothing of A
    assert c.asked == [4]
    assert c.topups[-2:] == [(frozenset({B}), None), (frozenset({B}), None)]

    t.resume([TP("orders", 0)])
    c.script.append({A: records(A, [6, 7]), B: records(B, [9])})
    # The held ones, and what aiokafka holds of B (not of A, whose held ones come first).
    assert got(await t.fetch(0, 4)) == of(A, [4, 5]) + of(B, [9])
    assert c.asked == [4]
    assert got(await t.fetch(0, 4)) == of(A, [6, 7])
    assert c.asked == [4, 4]


async def test_records_of_a_partition_no_longer_ready_are_dropped() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, range(0, 6)), B: records(B, range(0, 6))})

    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    t._ready = frozenset({TP("orders", 1)})  # A revoked (its next owner reads A 4 on)
    assert got(await t.fetch(0, 4)) == of(B, range(0, 4))
    assert A not in t._fetched
    assert got(await t.fetch(0, 4)) == of(B, [4, 5])
    assert got(await t.fetch(0, 4)) == []
    assert t._fetched == {}


async def test_revoke_bridge_drops_held_records_and_reassignment_reads_afresh() -> None:
    t, c = transport(A, B)
    listener = StubListener()
    bridge = _RebalanceBridge(t, listener)
    c.script.append({A: records(A, range(0, 6)), B: records(B, range(0, 6))})

    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    assert A in t._fetched and B in t._fetched
    await bridge.on_partitions_revoked([A])
    assert A not in t._fetched and B in t._fetched
    assert t._ready == frozenset({TP("orders", 1)})
    assert listener.revoked == [frozenset({TP("orders", 0)})]
    assert got(await t.fetch(0, 4)) == of(B, range(0, 4))

    await bridge.on_partitions_revoked([B])
    assert t._fetched == {} and t._ready == frozenset()
    await bridge.on_partitions_assigned([A, B])
    assert t._ready == frozenset({TP("orders", 0), TP("orders", 1)})
    # Assigned back: aiokafka reads from the committed offsets, nothing held is left over.
    c.script.append({A: records(A, range(0, 2)), B: records(B, range(0, 2))})
    assert got(await t.fetch(0, 4)) == of(A, [0, 1]) + of(B, [0, 1])
    assert c.seeks == []


async def test_stop_clears_held_records() -> None:
    t, c = transport(A)
    c.script.append({A: records(A, range(0, 6))})
    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    t._started = True
    await t.stop()
    assert t._fetched == {} and c.stopped


async def test_records_arriving_for_a_held_partition_go_behind_the_held_ones() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, range(0, 6))})
    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    t.pause([TP("orders", 0)])

    def resumed_while_fetching() -> Batch:
        t.resume([TP("orders", 0)])  # the runtime resumes A while aiokafka fetches
        return {A: records(A, range(6, 10)), B: records(B, [0])}

    c.script.append(resumed_while_fetching)
    # A's held records first; its new ones stay with aiokafka until those are handed out.
    assert got(await t.fetch(0, 4)) == of(A, [4, 5]) + of(B, [0])
    assert got(await t.fetch(0, 4)) == of(A, range(6, 10))
    assert c.asked == [4, None]
    assert t._fetched == {}


async def test_records_of_an_assigned_partition_not_yet_ready_are_rewound() -> None:
    other = TopicPartition("orders", 2)  # neither assigned nor ready: nothing to rewind
    t, c = transport(A, assigned=[A, B])
    c.script.append(
        {
            A: records(A, range(0, 3)),
            B: records(B, range(10, 13)),
            other: records(other, range(5, 7)),
        }
    )
    assert got(await t.fetch(0, 500)) == of(A, range(0, 3))
    assert c.seeks == [(B, 10)]
    assert B not in t._fetched and other not in t._fetched
    assert got(await t.fetch(0, 500)) == []


async def test_resume_during_a_waiting_fetch_hands_out_the_held_records_promptly() -> None:
    t, c = transport(A)
    c.script.append({A: records(A, range(0, 6))})
    assert got(await t.fetch(0, 4)) == of(A, range(0, 4))
    t.pause([TP("orders", 0)])

    async def resume_soon() -> None:
        await asyncio.sleep(0.05)
        t.resume([TP("orders", 0)])  # as the conductor does when a stream drains

    resumer = asyncio.ensure_future(resume_soon())
    began = time.monotonic()
    out = await t.fetch(1.0, 4)  # nothing else to hand out: waits in getmany
    waited = time.monotonic() - began
    await resumer
    assert got(out) == of(A, [4, 5])
    assert waited < 0.5


def runs(messages: Sequence[Message]) -> list[tuple[int, int]]:
    """(partition, length) of each run of consecutive messages from one partition."""
    out: list[tuple[int, int]] = []
    for m in messages:
        if out and out[-1][0] == m.partition:
            out[-1] = (m.partition, out[-1][1] + 1)
        else:
            out.append((m.partition, 1))
    return out


async def test_held_partitions_take_turns_of_a_run_across_fetches() -> None:
    assert HANDOUT_RUN == 50  # the figures below are written for it
    tps = [TopicPartition("orders", p) for p in range(4)]
    t, c = transport(*tps)
    c.script.append({tp: records(tp, [0]) for tp in tps})
    c.script.append({tp: records(tp, range(1, 301)) for tp in tps})
    assert len(await t.fetch(0, 500)) == 4
    first = await t.fetch(0, 500)
    # 10 runs of 50: partitions 0 and 1 get a third turn, and the next fetch goes on with 2.
    assert runs(first) == [(p, 50) for p in (0, 1, 2, 3, 0, 1, 2, 3, 0, 1)]
    second = await t.fetch(0, 500)
    assert runs(second) == [(p, 50) for p in (2, 3, 0, 1, 2, 3, 0, 1, 2, 3)]
    third = await t.fetch(0, 500)
    assert runs(third) == [(p, 50) for p in (0, 1, 2, 3)]
    every = got(first + second + third)
    for tp in tps:  # each partition in offset order, none lost or twice
        assert [o for p, o in every if p == tp.partition] == list(range(1, 301))
    assert c.asked == [500, None]


async def test_a_partition_whose_held_records_ran_out_is_topped_up_within_the_hand_out() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, range(0, 60)), B: records(B, range(0, 300))})
    assert runs(await t.fetch(0, 100)) == [(0, 50), (1, 50)]
    c.script.append({A: records(A, range(60, 200))})  # aiokafka has fetched more of A
    # A's last 10 held records go out and B has its turn; then, in the same hand-out and
    # without waiting, A is topped up with everything aiokafka holds of it and first gets the
    # 40 its turn fell short of.
    assert runs(await t.fetch(0, 100)) == [(0, 10), (1, 50), (0, 40)]
    assert c.topups == [(frozenset({A}), None)]
    assert c.asked == [100]  # no waiting getmany while B still has records held
    # Those 40 were the rest of A's turn, not a new one: the turns go on A, B.
    assert got(await t.fetch(0, 100)) == of(A, range(100, 150)) + of(B, range(100, 150))
    third = got(await t.fetch(0, 100))
    assert third == of(A, range(150, 200)) + of(B, range(150, 200))
    assert c.asked == [100]


async def test_the_hand_out_goes_on_when_a_partition_has_nothing_more_fetched() -> None:
    t, c = transport(A, B)
    c.script.append({A: records(A, range(0, 60)), B: records(B, range(0, 300))})
    assert runs(await t.fetch(0, 100)) == [(0, 50), (1, 50)]
    # A runs out and aiokafka holds nothing more of it: B fills the hand-out instead of
    # waiting for the next fetch, which would leave B's records a dispatch later.
    assert runs(await t.fetch(0, 100)) == [(0, 10), (1, 90)]
    assert c.topups == [(frozenset({A}), None)]
    assert c.asked == [100]
    assert got(await t.fetch(0, 100)) == of(B, range(140, 240))


class RebalancingConsumer(FakeConsumer):
    """aiokafka's `getmany`, even without a timeout, first waits out a rebalance under way
    (its `fetched_records` waits for the assignment), while the group coordinator calls the
    revoke and assign listeners: the next partition-bound getmany (a top-up) runs `rebalance`
    before it looks at what is held."""

    rebalance: Callable[[], Awaitable[None]] | None = None

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Batch:
        rebalance = self.rebalance
        if partitions and rebalance is not None:
            self.rebalance = None
            await rebalance()
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def test_records_taken_before_a_rebalance_the_top_up_waited_out_are_not_handed_out() -> None:
    t, _ = transport(A, B)
    c = RebalancingConsumer([A, B])
    t._consumer = c
    bridge = _RebalanceBridge(t, StubListener())
    c.script.append({A: records(A, range(0, 60)), B: records(B, range(0, 300))})
    assert runs(await t.fetch(0, 100)) == [(0, 50), (1, 50)]  # say committed: A 50, B 50

    async def rebalance() -> None:
        # Eager, as aiokafka's: every partition is revoked; A comes back, B goes to another
        # member. aiokafka then reads A again from its committed offset.
        await bridge.on_partitions_revoked([A, B])
        c._assigned = frozenset({A})
        c.script.clear()
        c.script.append({A: records(A, range(50, 80))})
        await bridge.on_partitions_assigned([A])

    c.rebalance = rebalance
    # A's last 10 held records (50-59) and B's next run were taken before A's top-up, which
    # waited out the rebalance: B's are no longer this worker's to handle, and A's come again
    # from its commit. Only what was read after the assignment goes out.
    assert got(await t.fetch(0, 100)) == of(A, range(50, 80))
    assert c.topups == [(frozenset({A}), None)]


async def test_first_fetch_after_idle_tops_up_the_partitions_aiokafka_left_out() -> None:
    C = TopicPartition("orders", 2)
    t, c = transport(A, B, C)
    # aiokafka fills `max_records` from the partition it holds first: all of A...
    c.script.append({A: records(A, range(0, 200))})
    # ...while it holds B and C too.
    c.script.append({B: records(B, range(0, 100)), C: records(C, range(0, 100))})
    first = await t.fetch(0, 200)
    assert runs(first)[0] == (0, 50)
    assert sorted(runs(first)) == [(0, 50), (1, 50), (2, 50)]  # B and C ran out: a short one
    assert c.asked == [200]
    # A run of each partition left out, one call each (aiokafka would fill `max_records` from
    # one of them): a run is unpacked after idling, not a megabyte.
    assert sorted(c.topups, key=str) == [(frozenset({B}), 50), (frozenset({C}), 50)]
    # Their runs are handed out: the next fetch takes all aiokafka holds of them.
    second = await t.fetch(0, 200)
    assert c.topups[2] == (frozenset({B, C}), None)
    assert runs(second)[0] == runs(second)[3] == (0, 50)
    assert sorted(runs(second)[1:3]) == [(1, 50), (2, 50)] and len(runs(second)) == 4
    # B and C ran out again and aiokafka held nothing more of them (one more look, without
    # waiting): A filled the rest of the hand-out.
    assert c.topups[3:] == [(frozenset({B, C}), None)]
    assert sorted(got(second)) == of(A, range(50, 150)) + of(B, range(50, 100)) + of(
        C, range(50, 100)
    )
    assert c.asked == [200]


async def test_with_every_partition_paused_aiokafka_is_not_asked_and_a_resume_ends_the_wait() -> (
    None
):
    t, c = transport(A)
    c.script.append({A: records(A, range(0, 3))})  # prefetched by aiokafka, kept while paused
    t.pause([TP("orders", 0)])
    asyncio.get_running_loop().call_later(0.05, t.resume, [TP("orders", 0)])
    # A long fetch timeout: only the resume can end this wait within the bound below.
    assert got(await asyncio.wait_for(t.fetch(30, 4), 10)) == []
    assert c.asked == [] and c.topups == []  # nothing asked of aiokafka while paused
    assert got(await t.fetch(0, 4)) == of(A, range(0, 3))


class HoldingConsumer(FakeConsumer):
    """As aiokafka holds a backlog: everything fetched of every partition at once, and
    `getmany` fills `max_records` from the partitions in order (one before the next)."""

    def __init__(self, backlog: dict[Any, list[Any]]) -> None:
        super().__init__(backlog)
        self.held = dict(backlog)

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Batch:
        out: Batch = {}
        room = max_records
        for tp in partitions or list(self.held):
            recs = self.held.get(tp)
            if not recs or room == 0:
                continue
            take = recs if room is None else recs[:room]
            out[tp], self.held[tp] = take, recs[len(take) :]
            if room is not None:
                room -= len(take)
        return out


class ChunkedConsumer(FakeConsumer):
    """As aiokafka fetches a backlog: one fetch response's records per partition at a time,
    as many as fit its bytes (so a different count per partition), and the next one fetched
    as soon as those are taken (the transport takes them all at once, and a slow agent
    handles them long after the next response came in)."""

    def __init__(self, backlog: dict[Any, int], chunk: dict[Any, int]) -> None:
        super().__init__(backlog)
        self.chunk = chunk
        self.end = dict(backlog)
        self.next = dict.fromkeys(backlog, 0)

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Batch:
        out: Batch = {}
        for tp in partitions or list(self.next):
            first = self.next[tp]
            last = min(first + self.chunk[tp], self.end[tp])
            if max_records is not None:
                last = min(last, first + max_records - sum(map(len, out.values())))
            if last > first:
                out[tp] = records(tp, range(first, last))
                self.next[tp] = last
        return out


def worst_skew(handed: list[int], partitions: int, backlog: int) -> int:
    """The most any partition was ahead of another while all still had a backlog."""
    counts = [0] * partitions
    worst = 0
    for p in handed:
        counts[p] += 1
        if max(counts) == backlog:
            break
        worst = max(worst, max(counts) - min(counts))
    return worst


async def test_over_a_backlog_fetched_in_uneven_pieces_the_skew_does_not_grow_with_it() -> None:
    tps = [TopicPartition("orders", p) for p in range(4)]
    t, _ = transport(*tps)
    # Records per fetch response of each partition (their records differ in size): turns
    # are cut short where a response's records run out, and at each hand-out's end.
    t._consumer = ChunkedConsumer(
        dict.fromkeys(tps, 3000), dict(zip(tps, (137, 300, 211, 90), strict=True))
    )
    handed: list[tuple[int, int]] = []
    for _ in range(4 * 3000 // 500 + 10):
        handed += got(await t.fetch(0, 500))
    for tp in tps:  # each partition in offset order, none lost or twice
        assert [o for p, o in handed if p == tp.partition] == list(range(3000))
    # A partition whose turn was cut short gets the rest of it first in the next hand-out;
    # without that, each cut left it behind by what it missed, and the skew grew with the
    # backlog (to 830 records here). Cuts that follow each other still add up to a little
    # more than a run at times, never to more than that.
    assert worst_skew([p for p, _ in handed], 4, 3000) < 3 * HANDOUT_RUN


async def test_over_a_backlog_no_partition_gets_more_than_a_run_ahead() -> None:
    tps = [TopicPartition("orders", p) for p in range(4)]
    t, _ = transport(*tps)
    t._consumer = HoldingConsumer({tp: records(tp, range(2500)) for tp in tps})
    handed: list[int] = []
    while len(handed) < 4 * 2500:
        handed += [m.partition for m in await t.fetch(0, 500)]
    counts = [0] * 4
    worst = 0
    for p in handed:
        counts[p] += 1
        if max(counts) == 2500:
            break
        worst = max(worst, max(counts) - min(counts))
    # Partitions run out of held records at different points (the first hand-out after idling
    # takes 500 of one partition and a run of the others); each is topped up in its place in
    # the turns, so none gets a second turn before the others had theirs.
    assert worst == HANDOUT_RUN
