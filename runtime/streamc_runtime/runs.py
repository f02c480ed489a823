"""Fused agent loops: `Run` (a run of values a generated loop handles in one plain `for`,
acked as a whole) and `_Runs`, the node `Stream.runs()` builds to hand runs out.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from operator import length_hint
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .events import (
    Carrier,
    Chunk,
    Event,
    _bounds,
    _Member,
    ack_carrier,
    carrier_events,
    forwarded_key_headers,
    forwarded_timestamp,
    positioned,
)
from .forward import _Forward, _forwards_bytes
from .stream import Stream
from .transport import HANDOUT_RUN, Headers, RecordTooLargeError

if TYPE_CHECKING:
    from .topic import Topic

T = TypeVar("T")


class Run(Generic[T]):
    """A run of values handed to a fused agent loop (`async for run in stream.runs()`, then
    `for value in run:`). The element the loop is handling is known from the position of the
    loop's iterator, so a body that raises dead-letters exactly that element; called again,
    the body gets the same run back and goes on after it. The run is acked as a whole when the
    agent asks for the next one, after what it sent (`send`) has been handed to the transport.

    Iterating is a plain list iterator (no generator step per element): its position
    (`length_hint`, what is left) tells which element is in hand when the runtime asks."""

    __slots__ = (
        "_acked",
        "_bounds",
        "_carriers",
        "_chunks",
        "_events",
        "_it",
        "_next",
        "_node",
        "_resume",
        "_sends",
        "_values",
    )

    def __init__(
        self,
        node: _Runs[T],
        values: list[T],
        carriers: list[Carrier] | None,
        chunks: list[Chunk] | None = None,
    ) -> None:
        self._node = node
        self._values = values
        self._carriers = carriers  # None: the run is `chunks`, its events made when needed
        self._chunks = chunks or []
        self._bounds = _bounds(self._chunks)  # the index in the run of each chunk's first
        self._events: dict[int, Event[Any, Any]] = {}  # a chunk's elements made into events
        self._it: Iterator[T] | None = None  # the loop's iterator, while it runs
        self._next = 0  # where a new loop over the run starts
        self._resume = False  # the body raised on an element and is called again
        self._acked = 0  # elements before this one were acked by `flush`
        # Records sent per topic, with the carrier of each; sent when the run is done.
        self._sends: dict[Topic[Any], tuple[list[OutRecord], list[Carrier]]] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[T]:
        it = iter(self._values)
        if self._next:
            it.__setstate__(self._next)  # type: ignore[attr-defined]
        self._it = it
        return it

    def _position(self) -> int:
        """The index of the element in hand (the last one handed to the loop), -1 if none.
        Revocation only drops elements after it, so the iterator's count of what is left
        still points there."""
        it = self._it
        if it is None:
            return self._next - 1
        return len(self._values) - length_hint(it) - 1

    def _carrier(self, i: int) -> Carrier:
        """The carrier of element `i`."""
        carriers = self._carriers
        if carriers is not None:
            return carriers[i]
        event = self._events.get(i)
        if event is None:
            j = bisect_right(self._bounds, i) - 1
            chunk = self._chunks[j]
            event = self._events[i] = _Member(
                chunk.messages[i - self._bounds[j]],
                self._values[i],
                chunk.state,
                chunk.kdecode,
                i < self._acked,
                _chunk=chunk,
            )
        return event

    def _ack_chunks(self, start: int, stop: int) -> None:
        """Ack elements `start` to `stop` of a run of chunks, one release per chunk, less
        those acked on their own (dead-lettered); all before `start` are acked already."""
        events = self._events
        for chunk, b in zip(self._chunks, self._bounds, strict=True):
            n = len(chunk.messages)
            lo = start - b if start > b else 0  # not `max`/`min`: this runs once per run
            hi = stop - b if stop - b < n else n
            if lo >= hi:
                continue
            count = hi - lo
            if events:
                for i in range(b + lo, b + hi):
                    event = events.get(i)
                    if event is not None:
                        if event._acked:
                            count -= 1
                        else:
                            event._acked = True
            if count:
                chunk.state.release_members(chunk.entry, count)
            # All before `hi` is done: commits may pass it, as they would one by one (up to
            # the first member dropped on revocation, when all that was kept is done).
            first = chunk.messages[hi].offset if hi < n else chunk.cut
            if first is not None:
                chunk.entry = chunk.state.advance_run(chunk.entry, first)

    def count(self, k: int) -> int:
        """The next number of the loop's `k`-th `enumerate`."""
        counts = self._node._counts
        n = counts[k]
        counts[k] = n + 1
        return n

    async def flush(self) -> None:
        """Send what the run has sent so far and ack the elements before the one in hand: the
        loop is about to wait on a hook, and work that is done should not wait with it (a
        loop that never waits sends and acks once per run)."""
        sends = self._sends
        if sends:
            self._sends = None
            await self._node._send(sends)
        done = self._position()
        carriers = self._carriers
        if carriers is None:
            if done > self._acked:
                self._ack_chunks(self._acked, done)
        else:
            for carrier in carriers[self._acked : done]:
                ack_carrier(carrier)
        self._acked = max(done, self._acked)

    def send(
        self, topic: Topic[Any], value: Any, *, as_received: bool = False, more_steps: bool = False
    ) -> None:
        """`echo`/`to` in a fused loop: send `value` to `topic` with the key, headers and
        timestamp of the element in hand, once the run is done. The element stays in flight
        until the record is delivered. `as_received`: no hook can have changed `value`, so
        its message's own bytes go out when `topic` has the type they were decoded as. A
        value that cannot be encoded raises here. `more_steps`: the element has steps with
        effects after this send, so a record the transport would refuse as too large raises
        here too, and the element is dead-lettered before them; else (its last step) the
        refusal waits for the run's send, which dead-letters it then."""
        node = self._node
        position = self._position()
        assert position >= 0, "Run.send outside the loop over the run"
        carrier = self._carrier(position)
        if as_received and not isinstance(carrier, list) and node._as_received(topic):
            data = carrier.message.value
        else:
            data = topic.value_codec.encode(value)
        raw_key, headers = forwarded_key_headers(carrier)
        if topic.positions and not isinstance(carrier, list):
            headers = positioned(carrier.message, headers)
        if more_steps:  # as at a `to` outside a fused loop, the element stops here
            node._refuse(raw_key, data, headers)
        sends = self._sends
        if sends is None:
            sends = self._sends = {}
        pending = sends.get(topic)
        if pending is None:
            pending = sends[topic] = ([], [])
        pending[0].append((raw_key, data, headers))
        pending[1].append(carrier)
        for event in carrier_events(carrier):  # in flight until delivered, even if dead-lettered
            event._offsets.hold(event.message.offset)


OutRecord = tuple[bytes | None, bytes | None, Headers]


class _Runs(Stream[Run[T]]):
    """`Stream.runs()`: hands out runs of up to `HANDOUT_RUN` elements. Straight from the
    source buffer when upstream passes events on as they are (the source, or the read-back
    side of `group_by`/`through`); otherwise pulled from upstream until it has nothing more at
    hand (a `take`'s batches, an aggregate's rows)."""

    _op = "runs"

    def __init__(self, up: Stream[T], counters: Sequence[int]) -> None:
        super().__init__(up._worker, up, up._source)
        self._counts = list(counters)
        self._direct = up is up._source or isinstance(up, _Forward)
        if self._direct:
            # The common case: the Conductor hands this loop whole runs (`Chunk`s), each
            # registered and acked at once, without an `Event` per message (a forward's
            # read-back too: nothing but this loop reads its buffer).
            self._source.chunk()
        else:
            up._read_in_runs()
        self._run: Run[T] | None = None
        self._raw: dict[Topic[Any], bool] = {}
        self._refuse = self._worker.transport.refuse_too_large
        self._sample_t0 = 0.0
        # Revocation drops the unhandled rest of a run (see `abandon`), as it drops buffers;
        # so does a stop (see `close`).
        self._worker.takes.append(self)
        self._worker.fused.append(self)

    pending = 0  # values held for a partial batch: never (see `Worker.partial_batches`)

    @property
    def _current(self) -> Carrier | None:
        """The element the agent is handling (the Worker dead-letters it if the body raises)."""
        run = self._run
        if run is None:
            return None
        position = run._position()
        return run._carrier(position) if position >= 0 else None

    @_current.setter
    def _current(self, value: Carrier | None) -> None:
        # Only ever cleared: by the Worker once it dead-lettered (or acked) the element in
        # hand. A new loop over the run starts after it.
        assert value is None
        run: Run[T] | None = getattr(self, "_run", None)  # `Stream.__init__` clears it too
        if run is not None and run._it is not None:
            run._next = run._position() + 1
            run._it = None
            run._resume = True

    def _as_received(self, topic: Topic[Any]) -> bool:
        raw = self._raw.get(topic)
        if raw is None:
            up = self._up
            assert up is not None
            raw = self._raw[topic] = _forwards_bytes(up, topic)
        return raw

    def abandon(self, revoked: frozenset[Any]) -> None:
        """Drop the elements of revoked partitions the loop has not reached yet (never handed
        to the agent, so the partitions' new owner handles them)."""
        run = self._run
        if run is None:
            return
        start = run._position() + 1
        values, carriers = run._values, run._carriers
        if carriers is None:
            self._abandon_chunk(run, start, revoked)
            return
        for carrier in carriers[: max(start - 1, 0)]:  # none before the loop reached one
            # Handled (what they sent holds them until delivered): done, so the revocation's
            # commit covers them rather than leaving them to the next owner.
            if isinstance(carrier, Event) and (
                (carrier.message.topic, carrier.message.partition) in revoked
            ):
                carrier._ack()
        keep: list[int] = []
        for i in range(start, len(values)):
            carrier = carriers[i]
            if isinstance(carrier, Event) and (
                (carrier.message.topic, carrier.message.partition) in revoked
            ):
                # A chunk's member (an aggregate's) counts in its chunk's entry.
                if type(carrier) is _Member:
                    carrier._offsets.abandon(carrier._chunk.entry, 1, carrier.message.offset)
                else:
                    carrier._offsets.abandon(carrier.message.offset)
            else:
                keep.append(i)  # a batch is kept whole (at-least-once), as `_Take` keeps it
        if len(keep) != len(values) - start:
            if self._direct:
                self._source.dropped += len(values) - start - len(keep)
            values[start:] = [values[i] for i in keep]
            carriers[start:] = [carriers[i] for i in keep]

    def close(self) -> None:
        """The worker stops: the elements the loop has not reached are dropped unacked, as
        the source drops its buffer, so they stay uncommitted for the next owner and the stop
        waits for the element in hand only."""
        run = self._run
        if run is None:
            return
        start = run._position() + 1
        dropped = len(run._values) - start
        if dropped > 0:
            # A run of chunks keeps its chunks: the elements past the values are never acked,
            # so their offsets stay registered and uncommitted.
            del run._values[start:]
            if run._carriers is not None:
                for carrier in run._carriers[start:]:
                    if type(carrier) is _Member:  # an aggregate's: its chunk's entry counts it
                        carrier._offsets.abandon(carrier._chunk.entry, 1, carrier.message.offset)
                del run._carriers[start:]
            if self._direct:
                self._source.dropped += dropped

    def _abandon_chunk(self, run: Run[T], start: int, revoked: frozenset[Any]) -> None:
        gone = [(c.messages[0].topic, c.messages[0].partition) in revoked for c in run._chunks]
        if not any(gone):
            return
        # As for events: handled elements are done, the unhandled rest of the revoked
        # partitions is dropped.
        if start - 1 > run._acked:
            run._ack_chunks(run._acked, start - 1)
            run._acked = start - 1
        values: list[T] = []
        chunks: list[Chunk] = []
        for chunk, b, revoked_chunk in zip(run._chunks, run._bounds, gone, strict=True):
            n = len(chunk.messages)
            # A chunk wholly before the element in hand is kept whole (min): `start - b`
            # counts the later chunks' elements too.
            keep = min(max(start - b, 0), n) if revoked_chunk else n
            if keep < n:
                chunk.state.abandon(chunk.entry, n - keep)
                self._source.dropped += n - keep
                chunk.cut = chunk.messages[keep].offset
                del chunk.messages[keep:]
            if keep:
                values.extend(run._values[b : b + keep])
                chunks.append(chunk)
        run._values[:] = values
        run._chunks = chunks
        run._bounds = _bounds(chunks)

    async def __anext__(self) -> Run[T]:
        run = self._run
        source = self._source
        if run is not None:
            if run._resume and run._next < len(run._values):
                run._resume = False
                return run  # the body raised on an element and was called again: go on
            self._run = None
            if run._sends:
                await self._send(run._sends)
            carriers = run._carriers
            if carriers is None:
                run._ack_chunks(run._acked, len(run._values))
            else:
                chunk: Chunk | None = None  # members of a chunk in a row: one release
                members = 0
                for carrier in carriers:  # `ack_carrier`, inlined for the common case
                    if type(carrier) is Event:
                        if not carrier._acked:
                            carrier._acked = True
                            carrier._offsets.release(carrier.message.offset)
                    elif type(carrier) is _Member:
                        if not carrier._acked:
                            carrier._acked = True
                            of = carrier._chunk
                            if of is not chunk:
                                if members:
                                    assert chunk is not None
                                    chunk.state.release_members(chunk.entry, members)
                                chunk, members = of, 0
                            members += 1
                    else:
                        ack_carrier(carrier)
                if members:
                    assert chunk is not None
                    chunk.state.release_members(chunk.entry, members)
            if self._sample_t0:
                elapsed = time.perf_counter() - self._sample_t0
                source.latency.observe(elapsed / len(run._values))  # per element of the run
                self._sample_t0 = 0.0
                source.sample = False
            left = source.until_check - len(run._values)
            if left > 0:
                source.until_check = left
            else:
                await source.share_loop()
        while True:
            run = self._take() if self._direct else await self._pull_run()
            if run is not None:
                break
            if source.closed:
                raise StopAsyncIteration
            await source.wait(self._deadline())
        if source.sample:
            self._sample_t0 = time.perf_counter()
        self._run = run
        return run

    def _take(self) -> Run[T] | None:
        source = self._source
        buffer = source.buffer
        if not buffer:
            return None
        if source.chunked:
            # Whole chunks, as many as fit in `HANDOUT_RUN` (at least one).
            chunks: deque[Chunk] = buffer  # type: ignore[assignment]
            chunk = chunks.popleft()
            values = chunk.values
            taken = [chunk]
            while chunks and len(values) + len(chunks[0].values) <= HANDOUT_RUN:
                chunk = chunks.popleft()
                if len(taken) == 1:
                    values = values.copy()
                values += chunk.values
                taken.append(chunk)
            source.size -= len(values)
            if source.full and source.size <= source.low:
                self._worker.conductor.drained(source)
            return Run(self, values, None, taken)
        popleft = buffer.popleft
        events = [popleft() for _ in range(min(len(buffer), HANDOUT_RUN))]
        if source.full and len(buffer) <= source.low:
            self._worker.conductor.drained(source)
        return Run(self, [e.value for e in events], cast("list[Carrier]", events))

    async def _pull_run(self) -> Run[T] | None:
        up = self._up
        assert up is not None
        values, carriers = await up._pull_many(HANDOUT_RUN)
        return Run(self, values, carriers) if values else None

    async def _send(self, sends: dict[Topic[Any], tuple[list[OutRecord], list[Carrier]]]) -> None:
        for topic, (records, carriers) in sends.items():
            await self._send_run(topic, records, carriers)

    async def _send_run(
        self, topic: Topic[Any], records: list[OutRecord], carriers: list[Carrier]
    ) -> None:
        """One `send_many` per topic and run; each record's hold (taken in `Run.send`) is
        released when the run's records are delivered, and never if they are not (the worker
        stops with them uncommitted). A transport failure is retried as `forward` retries it."""
        worker = self._worker
        held = [(e._offsets, e.message.offset) for c in carriers for e in carrier_events(c)]
        timestamps = [forwarded_timestamp(carrier) for carrier in carriers]
        try:
            delivery = await worker.transport.send_many(topic.name, records, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent: a data error
            refused = set(exc.indexes)
            for i in sorted(refused):
                for e in carrier_events(carriers[i]):
                    e._offsets.release(e.message.offset)  # its hold: nothing went out
                await worker.dead_letter(carriers[i], exc, self._agent)
            kept = [i for i in range(len(records)) if i not in refused]
            if kept:
                await self._send_run(topic, [records[i] for i in kept], [carriers[i] for i in kept])
            return
        except Exception as exc:
            send = partial(worker.transport.send_many, topic.name, records, timestamps)
            retried = await worker._resend(exc, send, topic.name)
            if retried is None:  # the worker is stopping: the holds stay, nothing commits
                return
            delivery = retried
        worker.sent += len(records)
        worker.sent_to[topic.name] += len(records)
        fut = delivery if isinstance(delivery, asyncio.Future) else asyncio.ensure_future(delivery)
        if fut.done():
            worker._delivered(held, fut)  # now, not a loop step later
        else:
            fut.add_done_callback(partial(worker._delivered, held))
