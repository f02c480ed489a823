"""The in-process broker: Kafka's data model without the network.

`MemoryBroker` holds topics split into partitions of offset-ordered messages, places keyed records
with Kafka's default partitioner (murmur2 of the key bytes, so a key lands on the same partition
number as on a real cluster), and keeps consumer groups with committed offsets; members of one
group split the partitions of the topics they subscribe to (range assignment, like Kafka's
default). `MemoryTransport` is one group member plus a producer, implementing the `Transport`
protocol, so every test and `streamc run` exercise the same runtime code as Kafka does.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

import msgspec

from .transport import (
    HANDOUT_RUN,
    TP,
    Delivery,
    Headers,
    RebalanceListener,
    RecordTooLargeError,
    TopicSpec,
)

__all__ = [
    "MemoryBroker",
    "MemoryDelivery",
    "MemoryMessage",
    "MemoryTransport",
    "murmur2",
    "partition_for_key",
    "record_size",
]


class MemoryMessage(msgspec.Struct, gc=False):
    """A stored record; the memory broker's implementation of `transport.Message`.

    Untracked by the cycle collector (`gc=False`: it holds only strings, ints, bytes and
    tuples of them, so it can be in no cycle): a broker keeps every message it stored, and
    with each one tracked, a full collection walked them all again; it was half of what a
    table's changelog cost per element here."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class MemoryDelivery:
    """Where a record landed; the memory broker's implementation of `transport.Delivery`."""

    topic: str
    partition: int
    offset: int


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`Utils.murmur2` in kafka-clients), as an unsigned 32-bit int."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length & ~3
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=16384)  # keys repeat (that is what group_by is for)
def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: `toPositive(murmur2(key)) % n`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Partition:
    """A partition's log: messages in offset order from `base` (`trim` raises it) to `end`.

    Stored in sealed chunks, tuples of `_CHUNK` messages, and an open tail list. A long list of
    messages made every full pass of the cycle collector walk all of them; a tuple of untracked
    messages is untracked itself once the collector has seen it, so only the short list of
    chunks is walked."""

    __slots__ = ("_first", "_sealed", "_tail", "base", "end")

    def __init__(self) -> None:
        self._sealed: list[tuple[MemoryMessage, ...]] = []
        self._tail: list[MemoryMessage] = []
        self._first = 0  # offset of the first message kept (of _sealed[0], else of _tail[0])
        self.base = 0  # offset of the first message not trimmed (>= _first)
        self.end = 0  # offset the next message gets

    @property
    def messages(self) -> list[MemoryMessage]:
        """The retained messages (a copy); assigning replaces them (tests simulate compaction
        so), the first at offset `base`."""
        return self.read(self.base, self.end)

    @messages.setter
    def messages(self, messages: list[MemoryMessage]) -> None:
        self._sealed, self._tail = [], []
        self._first = self.end = self.base
        for message in messages:
            self.append(message)

    def append(self, message: MemoryMessage) -> None:
        tail = self._tail
        tail.append(message)
        self.end += 1
        if len(tail) == _CHUNK:
            self._sealed.append(tuple(tail))
            tail.clear()

    def read(self, start: int, stop: int) -> list[MemoryMessage]:
        """The messages with offsets in [start, stop), as far as they are retained."""
        out: list[MemoryMessage] = []
        self.read_into(out, start, stop)
        return out

    def read_into(self, out: list[MemoryMessage], start: int, stop: int) -> int:
        """Append the messages `read` would return to `out` (a fetch gathers its runs so,
        without a list per run); how many."""
        first = self._first
        i = (start if start > self.base else self.base) - first
        j = (stop if stop < self.end else self.end) - first
        if i >= j:
            return 0
        sealed = self._sealed
        in_sealed = len(sealed) * _CHUNK
        n = j - i
        while i < j:
            if i >= in_sealed:
                out.extend(self._tail[i - in_sealed : j - in_sealed])
                break
            c, r = divmod(i, _CHUNK)
            take = min(_CHUNK - r, j - i)
            out.extend(sealed[c][r : r + take])
            i += take
        return n

    def trim(self, upto: int) -> int:
        """Drop the messages before offset `upto`; how many were dropped."""
        n = min(upto, self.end) - self.base
        if n <= 0:
            return 0
        self.base += n
        whole = min((self.base - self._first) // _CHUNK, len(self._sealed))
        if whole:
            del self._sealed[:whole]
            self._first += whole * _CHUNK
        if not self._sealed:  # the rest is in the tail: drop from it exactly
            del self._tail[: self.base - self._first]
            self._first = self.base
        return n


_CHUNK = 4096


class _Group:
    __slots__ = ("assignment", "committed", "generation", "members", "owners")

    def __init__(self) -> None:
        self.members: list[MemoryTransport] = []
        self.committed: dict[TP, int] = {}
        self.generation = 0
        self.assignment: dict[int, frozenset[TP]] = {}  # id(member) -> partitions
        # Who holds each partition right now. A new owner starts only once the old one has
        # run its revocation (and committed), as Kafka's join barrier guarantees.
        self.owners: dict[TP, int] = {}


class MemoryBroker:
    """Topics, partitions, offsets and consumer groups, in memory."""

    def __init__(self, *, clock: Callable[[], int] | None = None) -> None:
        self._topics: dict[str, list[_Partition]] = {}
        self._configs: dict[str, dict[str, str]] = {}
        self._groups: dict[str, _Group] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._clock = clock or (lambda: int(time.time() * 1000))
        # Called with every stored message (`streamc run` writes its outputs from here).
        self.on_produce: Callable[[MemoryMessage], None] | None = None

    # -- topics -----------------------------------------------------------------------------
    def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create the topic if absent (an existing topic keeps its partitions and config, as
        on Kafka). The config is only kept (`topic_config`): nothing here compacts."""
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        if name not in self._topics:
            self._topics[name] = [_Partition() for _ in range(partitions)]
            self._configs[name] = dict(config or {})
            for group in self._groups.values():  # subscribers of the new topic get its partitions
                if any(name in member._topics for member in group.members):
                    self._rebalance(group)

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def topic_config(self, name: str) -> dict[str, str]:
        """The config a topic was created with."""
        return dict(self._configs[name])

    def partitions_for(self, topic: str) -> int | None:
        parts = self._topics.get(topic)
        return None if parts is None else len(parts)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> MemoryDelivery:
        """Append one record and return where it landed."""
        parts = self._topics.get(topic)
        if parts is None:
            raise KeyError(f"unknown topic {topic!r}")
        if partition is None:
            partition = self._place(topic, key, len(parts))
        elif not 0 <= partition < len(parts):
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        part = parts[partition]
        offset = part.end
        message = MemoryMessage(
            topic,
            partition,
            offset,
            self._clock() if timestamp is None else timestamp,
            key,
            value,
            tuple(headers),
        )
        part.append(message)
        if self.on_produce is not None:
            self.on_produce(message)
        if self._waiters:
            self._wake()
        return MemoryDelivery(topic, partition, offset)

    def produce_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        timestamps: Sequence[int | None] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Append a run of records at once, each as `produce` would (one clock reading for the
        run, no `MemoryDelivery` each); the run is stored whole or, if a partition is wrong,
        not at all."""
        parts = self._topics.get(topic)
        if parts is None:
            raise KeyError(f"unknown topic {topic!r}")
        n = len(parts)
        if partitions is None:
            places = [self._place(topic, key, n) for key, _, _ in records]
        else:
            places = list(partitions)
            for q in places:
                if not 0 <= q < n:
                    raise ValueError(f"topic {topic!r} has no partition {q}")
        now = self._clock()
        stamps: Any = itertools.repeat(None) if timestamps is None else timestamps
        on_produce = self.on_produce
        for (key, value, headers), q, ts in zip(records, places, stamps, strict=False):
            part = parts[q]
            message = MemoryMessage(
                topic,
                q,
                part.end,
                now if ts is None or ts < 0 else ts,
                key,
                value,
                tuple(headers),
            )
            part.append(message)
            if on_produce is not None:
                on_produce(message)
        if self._waiters:
            self._wake()

    def _place(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return partition_for_key(key, partitions)
        counter = self._round_robin.get(topic)
        if counter is None:
            counter = self._round_robin[topic] = itertools.count()
        return next(counter) % partitions

    def messages(self, topic: str, partition: int | None = None) -> list[MemoryMessage]:
        """A topic's retained messages, partition by partition, each in offset order."""
        parts = self._topics.get(topic)
        if parts is None:
            raise KeyError(f"unknown topic {topic!r}")
        if partition is not None:
            return parts[partition].messages
        return [m for part in parts for m in part.messages]

    def end_offset(self, tp: TP) -> int:
        return self._topics[tp.topic][tp.partition].end

    def committed(self, group_id: str, tp: TP) -> int | None:
        group = self._groups.get(group_id)
        return None if group is None else group.committed.get(tp)

    def lag(self, group_id: str, topic: str) -> int:
        """Messages of `topic` not yet committed by the group."""
        total = 0
        for p, part in enumerate(self._topics[topic]):
            total += part.end - (self.committed(group_id, TP(topic, p)) or 0)
        return total

    def trim(self) -> int:
        """Drop messages every known group has committed (a stand-in for retention); returns how
        many were dropped. Topics no group has committed are kept whole."""
        dropped = 0
        for topic, parts in self._topics.items():
            for p, part in enumerate(parts):
                tp = TP(topic, p)
                marks = [g.committed.get(tp) for g in self._groups.values()]
                if not marks or any(mark is None for mark in marks):
                    continue
                upto = min(mark for mark in marks if mark is not None)
                dropped += part.trim(upto)
        return dropped

    # -- groups -----------------------------------------------------------------------------
    def _group(self, group_id: str) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group()
        return group

    def _join(self, member: MemoryTransport) -> None:
        group = self._group(member.group_id)
        if member not in group.members:
            group.members.append(member)
        self._rebalance(group)

    def _leave(self, member: MemoryTransport) -> None:
        group = self._group(member.group_id)
        if member in group.members:
            group.members.remove(member)
            for tp in [tp for tp, owner in group.owners.items() if owner == id(member)]:
                del group.owners[tp]
            self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        """Range assignment per topic over the members subscribed to it, in join order."""
        assignment: dict[int, set[TP]] = {id(m): set() for m in group.members}
        for topic in sorted({t for m in group.members for t in m._topics}):
            parts = self._topics.get(topic)
            if parts is None:
                continue
            members = [m for m in group.members if topic in m._topics]
            n, k = len(parts), len(members)
            start = 0
            for i, member in enumerate(members):
                count = n // k + (1 if i < n % k else 0)
                assignment[id(member)].update(TP(topic, p) for p in range(start, start + count))
                start += count
        group.assignment = {mid: frozenset(tps) for mid, tps in assignment.items()}
        group.generation += 1
        self._wake()

    def _commit(self, group_id: str, offsets: Mapping[TP, int]) -> None:
        self._group(group_id).committed.update(offsets)

    # -- waiting ----------------------------------------------------------------------------
    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109 - a poll bound
        # Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives
        # together with the wake-up, and a fetch that ignores its cancellation hangs the
        # worker's stop. A plain future with a timer cannot lose the CancelledError.
        # `timeout=None`: until the next wake-up (a follower, which has nothing else to do).
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        timer = None if timeout is None else loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            try:  # timed out or cancelled: do not keep it for the next wake-up
                self._waiters.remove(fut)
            except ValueError:  # woken: `_wake` already took it
                pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A record's size as the memory transport measures it against `max_record_size`: its
    key, value and header bytes (Kafka adds a few bytes of framing on top)."""
    size = (len(key) if key else 0) + (len(value) if value else 0)
    for name, data in headers:
        size += len(name.encode()) + len(data)
    return size


class MemoryTransport:
    """One member of a consumer group on a `MemoryBroker`, plus a producer.

    `max_record_size` plays the Kafka producer's `max_request_size`: a larger record (by
    `record_size`) is refused with `RecordTooLargeError` before anything is stored."""

    def __init__(
        self, broker: MemoryBroker, group_id: str, *, max_record_size: int | None = None
    ) -> None:
        self.broker = broker
        self.group_id = group_id
        self.max_record_size = max_record_size
        self._topics: frozenset[str] = frozenset()
        self._listener: RebalanceListener | None = None
        self._assigned: frozenset[TP] = frozenset()
        self._positions: dict[TP, int] = {}
        self._paused: set[TP] = set()
        self._generation = -1
        self._waiting_for: frozenset[TP] = frozenset()  # assigned, but still held by another
        self._started = False
        self._cursor = 0  # index (in sorted order) of the partition the next fetch starts with

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.broker._leave(self)
        self._assigned = frozenset()
        self._topics = frozenset()

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            self.broker.create_topic(spec.name, spec.partitions, spec.config)

    async def subscribe(self, topics: Collection[str], listener: RebalanceListener) -> None:
        self._topics = frozenset(topics)
        self._listener = listener
        self.broker._join(self)

    async def _sync_group(self) -> None:
        group = self.broker._group(self.group_id)
        me = id(self)
        while self._generation != group.generation:
            self._generation = group.generation
            target = group.assignment.get(me, frozenset())
            revoked = self._assigned - target
            if revoked:
                if self._listener is not None:
                    await self._listener.on_partitions_revoked(revoked)
                self._assigned -= revoked
                for tp in revoked:
                    self._positions.pop(tp, None)
                    self._paused.discard(tp)
                    if group.owners.get(tp) == me:
                        del group.owners[tp]
                self.broker._wake()  # a member waiting for these partitions may take them
            self._waiting_for = target - self._assigned
        if self._waiting_for:
            free = frozenset(tp for tp in self._waiting_for if group.owners.get(tp, me) == me)
            if free:
                self._waiting_for -= free
                for tp in free:
                    group.owners[tp] = me
                    self._positions[tp] = group.committed.get(tp, 0)
                self._assigned |= free
                if self._listener is not None:
                    await self._listener.on_partitions_assigned(free)

    def _collect(self, max_records: int) -> list[MemoryMessage]:
        """As the Kafka transport hands out: partitions with messages take turns, up to
        `HANDOUT_RUN` at a time, starting after the partition the last fetch ended with."""
        out: list[MemoryMessage] = []
        tps = [tp for tp in sorted(self._assigned) if tp not in self._paused]
        if not tps:
            return out
        topics = self.broker._topics
        positions = self._positions
        parts = [topics[tp.topic][tp.partition] for tp in tps]
        n = len(tps)
        turn = [(self._cursor + i) % n for i in range(n)]
        room = max_records
        while turn:
            run = HANDOUT_RUN if len(turn) > 1 else max_records
            left = []
            for i in turn:
                tp = tps[i]
                part = parts[i]
                pos = positions[tp]
                if pos < part.base:
                    pos = part.base
                if pos >= part.end:
                    continue
                got = part.read_into(out, pos, pos + (run if run < room else room))
                pos += got
                positions[tp] = pos
                self._cursor = i + 1
                room -= got
                if room <= 0:
                    return out
                if pos < part.end:
                    left.append(i)
            turn = left
        return out

    async def fetch(
        self, timeout: float, max_records: int  # noqa: ASYNC109 - the Transport signature
    ) -> Sequence[MemoryMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self._sync_group()
            out = self._collect(max_records)
            if out:
                return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            await self.broker._wait(remaining)

    def assignment(self) -> frozenset[TP]:
        return self._assigned

    def pause(self, partitions: Collection[TP]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Collection[TP]) -> None:
        if self._paused.intersection(partitions):
            self._paused.difference_update(partitions)
            self.broker._wake()  # a fetch waiting on paused partitions must look again

    def paused(self) -> frozenset[TP]:
        return frozenset(self._paused)

    def highwater(self, partition: TP) -> int | None:
        """The end of an assigned partition (as Kafka's high watermark), else None."""
        if partition not in self._assigned:
            return None
        return self.broker._topics[partition.topic][partition.partition].end

    def has_unfetched(self) -> bool:
        """Whether an assigned partition (paused or not) holds messages not yet fetched, or a
        rebalance is pending. Lets `run_local` tell "idle" from "not fetched yet"."""
        if self._generation != self.broker._group(self.group_id).generation:
            return True
        if self._waiting_for:
            return True
        topics = self.broker._topics
        return any(
            self._positions[tp] < topics[tp.topic][tp.partition].end for tp in self._assigned
        )

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        self.broker._commit(self.group_id, offsets)

    async def committed(self, partition: TP) -> int | None:
        return self.broker.committed(self.group_id, partition)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Awaitable[Delivery]:
        if self.max_record_size is not None:
            self._refuse_too_large([(key, value, headers)])
        fut: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        if timestamp is not None and timestamp < 0:
            timestamp = None
        fut.set_result(self.broker.produce(topic, value, key, headers, partition, timestamp))
        return fut

    def _refuse_too_large(
        self, records: Sequence[tuple[bytes | None, bytes | None, Headers]]
    ) -> None:
        limit = self.max_record_size
        assert limit is not None
        refused = [i for i, (k, v, h) in enumerate(records) if record_size(k, v, h) > limit]
        if refused:
            raise RecordTooLargeError(
                f"{len(refused)} record(s) larger than max_record_size ({limit} bytes)",
                refused,
                limit,
            )

    def refuse_too_large(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if self.max_record_size is not None:
            self._refuse_too_large(((key, value, headers),))

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        timestamps: Sequence[int | None] | None = None,
        *,
        partitions: Sequence[int] | None = None,
    ) -> Awaitable[object]:
        if self.max_record_size is not None:
            self._refuse_too_large(records)  # before any of the run is stored
        if "send" not in self.__dict__ and type(self).send is MemoryTransport.send:
            # Nothing overrides `send`: the run is stored at once, delivered as it is stored.
            self.broker.produce_many(topic, records, timestamps, partitions)
            done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        # Record by record through `send`, which tests override to delay or fail deliveries.
        stamps = itertools.repeat(None) if timestamps is None else timestamps
        parts: Any = itertools.repeat(None) if partitions is None else partitions
        deliveries = [
            await self.send(topic, v, k, headers, p, ts)
            for (k, v, headers), ts, p in zip(records, stamps, parts, strict=False)
        ]
        return _all_delivered(deliveries)

    async def flush(self) -> None:
        return None

    def partitions_for(self, topic: str) -> int | None:
        return self.broker.partitions_for(topic)

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        part = self.broker._topics[topic][partition]
        end = part.end  # as of now: what is appended while reading is not waited for
        pos = start
        while True:
            # Trimmed (retention's stand-in), also while the caller held a chunk: on from the
            # first message kept, as a consumer reset to the earliest goes.
            pos = max(pos, part.base)
            if pos >= end:
                return
            chunk = part.read(pos, min(pos + _READ_CHUNK, end))
            yield chunk
            pos = chunk[-1].offset + 1
            await asyncio.sleep(0)  # a long restore leaves the loop to the rest

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[MemoryMessage], None]:
        parts = self.broker._topics[topic]
        for p in starts:
            if not 0 <= p < len(parts):
                raise ValueError(f"topic {topic!r} has no partition {p}")
        positions = dict(starts)
        caught_up = False
        while True:
            read = False
            for p, pos in positions.items():
                part = parts[p]
                while True:
                    # Trimmed (retention's stand-in), also while the caller held a chunk: on
                    # from the first message kept, as a consumer reset to the earliest goes.
                    pos = max(pos, part.base)
                    if pos >= part.end:
                        break
                    chunk = part.read(pos, min(pos + _READ_CHUNK, part.end))
                    pos = positions[p] = chunk[-1].offset + 1
                    read = True
                    yield chunk
                    await asyncio.sleep(0)  # a long first read leaves the loop to the rest
            if read:
                continue  # the caller may have awaited: look at every partition again
            if not caught_up:
                caught_up = True
                yield ()
                continue
            # Nothing new anywhere, and nothing awaited since looking: a produce wakes this.
            await self.broker._wait(None)


_READ_CHUNK = 10_000


def _all_delivered(deliveries: Sequence[Awaitable[Delivery]]) -> Awaitable[object]:
    """One awaitable for several deliveries: already done when they all are (the broker
    stores at once), else resolving when the last does or raising the first failure."""
    futures = [d for d in deliveries if isinstance(d, asyncio.Future)]
    if len(futures) == len(deliveries) and all(f.done() for f in futures):
        for fut in futures:
            if fut.cancelled() or fut.exception() is not None:
                return fut
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    return asyncio.gather(*deliveries)
