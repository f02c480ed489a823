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
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition  # type: ignore[import-untyped]
from streamc_runtime.kafka import KafkaSettings, KafkaTransport, _RebalanceBridge
from streamc_runtime.transport import TP, Message

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
    call, e.g. to resume a partition "while aiokafka fetched"); with none left it behaves as
    aiokafka with nothing to return: it waits out the timeout and returns `{}`."""

    def __init__(self, assigned: Collection[Any]) -> None:
        self._assigned = frozenset(assigned)
        self._paused: set[Any] = set()
        self.script: deque[Step] = deque()
        self.asked: list[int | None] = []  # `max_records` of each getmany
        self.seeks: list[tuple[Any, int]] = []
        self.stopped = False

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Batch:
        self.asked.append(max_records)
        if self.script:
            step = self.script.popleft()
            return step() if callable(step) else step
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
    c.script.append({A: records(A, [0])})
    # 1200 records over two partitions from a single getmany (700 of A, 500 of B).
    c.script.append({A: records(A, range(1, 701)), B: records(B, range(0, 500))})

    assert got(await t.fetch(0, 500)) == of(A, [0])
    first = got(await t.fetch(0, 500))
    assert c.asked == [500, None]
    second = got(await t.fetch(0, 500))
    third = got(await t.fetch(0, 500))
    assert c.asked == [500, None]  # no getmany until what it holds is handed out
    assert [len(first), len(second), len(third)] == [500, 500, 200]
    assert first == of(A, range(1, 501))
    assert second == of(A, range(501, 701)) + of(B, range(0, 300))
    assert third == of(B, range(300, 500))
    every = first + second + third
    assert sorted(every) == of(A, range(1, 701)) + of(B, range(0, 500))  # none lost or twice
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
    # Only A's held records left, and A is paused: aiokafka is asked (and returns B only).
    c.script.append({B: records(B, range(6, 9))})
    assert got(await t.fetch(0, 4)) == of(B, range(6, 9))
    assert c.asked == [4, None]
    assert got(await t.fetch(0, 4)) == []  # still paused: nothing of A
    assert c.asked == [4, None, None]

    t.resume([TP("orders", 0)])
    c.script.append({A: records(A, [6, 7]), B: records(B, [9])})
    assert got(await t.fetch(0, 4)) == of(A, [4, 5])  # the held ones, without a getmany
    assert c.asked == [4, None, None]
    assert got(await t.fetch(0, 4)) == of(A, [6, 7]) + of(B, [9])
    assert c.asked == [4, None, None, 4]


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
    assert got(await t.fetch(0, 4)) == of(A, range(4, 8))
    assert c.asked == [4, None]
    assert got(await t.fetch(0, 4)) == of(A, [8, 9]) + of(B, [0])
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
