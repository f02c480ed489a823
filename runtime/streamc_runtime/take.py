"""`Stream.take`: batches of at most `n` values, with an optional deadline for a partial
batch; its events are acked once the batch has been handled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from .events import (
    EMPTY,
    Chunk,
    Element,
    Event,
    Pulled,
    _Batch,
    _slice_done,
)
from .stream import Stream

if TYPE_CHECKING:
    pass


class _Take(Stream[list[Any]]):
    _op = "take"
    _changes_values = True

    def __init__(self, up: Stream[Any], n: int, within: float | None) -> None:
        super().__init__(up._worker, up, up._source)
        self._n = n
        self._within = within
        self._values: list[Any] = []
        self._events: list[Event[Any, Any]] = []
        self._due: float | None = None  # loop time the partial batch must go out by
        self._epoch = 0  # the worker's drain epoch when this batch started
        self._loop = asyncio.get_running_loop()
        self._worker.takes.append(self)
        # Straight from the source, batches are slices of `Chunk`s (`_Batch`): no `Event`
        # and no offset entry per message. `_rest` is a chunk a full batch cut, and where.
        self._parts: list[tuple[Chunk, int, int]] | None = None
        self._rest: tuple[Chunk, int] | None = None
        if up is up._source:
            self._source.chunk()
            self._parts = []

    @property
    def pending(self) -> int:
        """Values held in the partial batch."""
        return len(self._values)

    def _deadline(self) -> float | None:
        if self._values and self._due is not None:
            return self._due
        return super()._deadline()

    def abandon(self, revoked: frozenset[Any]) -> None:
        """Drop values of revoked partitions from the partial batch (never handed to the agent,
        so the partitions' new owner will handle them)."""
        if self._parts is not None:
            self._abandon_parts(revoked)
            return
        values, events = self._values, self._events
        if not values or len(values) != len(events):  # nested batches: keep (at-least-once)
            return
        keep = []
        for i, e in enumerate(events):
            if (e.message.topic, e.message.partition) in revoked:
                e._offsets.abandon(e.message.offset)
            else:
                keep.append(i)
        if len(keep) != len(values):
            # in place: a running `_pull` holds these very lists
            values[:] = [values[i] for i in keep]
            events[:] = [events[i] for i in keep]
            if not values:
                self._due = None

    def _abandon_parts(self, revoked: frozenset[Any]) -> None:
        # What a revoked partition has in the partial batch and the cut chunk is the tail of
        # its chunk: dropped, and the chunk cut there, so once all before is done a commit
        # reaches the first member dropped.
        parts, values = self._parts, self._values
        assert parts is not None
        rest = self._rest
        if rest is not None and _revoked(rest[0], revoked):
            self._rest = None
            self._source.dropped += len(rest[0].values) - rest[1]  # as if still buffered
            self._cut(rest[0], rest[1])
        if not values:
            return
        kept_parts: list[tuple[Chunk, int, int]] = []
        kept: list[Any] = []
        b = 0
        for part in parts:
            chunk, lo, hi = part
            if _revoked(chunk, revoked):
                self._cut(chunk, lo)
            else:
                kept_parts.append(part)
                kept += values[b : b + hi - lo]
            b += hi - lo
        if len(kept) != len(values):
            # in place: a running `_pull` holds these very lists
            parts[:] = kept_parts
            values[:] = kept
            if not values:
                self._due = None

    def _cut(self, chunk: Chunk, start: int) -> None:
        """Drop members `start` on of a revoked chunk: never handed to the agent."""
        n = len(chunk.messages)
        chunk.state.abandon(chunk.entry, n - start)
        chunk.cut = chunk.messages[start].offset
        del chunk.messages[start:]
        if start and chunk.done == start:
            _slice_done(chunk, start, start)  # all before is done: the entry moves to the cut

    def _begin_batch(self) -> None:
        """The first value of a batch is in: note the drain epoch and start the `within` clock."""
        self._epoch = self._worker.drain_epoch
        if self._within is not None:
            self._due = self._loop.time() + self._within

    def _emit(self) -> Element:
        values, events, parts = self._values, self._events, self._parts
        self._values, self._events, self._due = [], [], None
        self._worker.batches += 1
        if parts is not None:
            self._parts = []
            return (values, _Batch(parts))
        return (values, events)

    def _take_chunks(self) -> bool:
        """Fill the batch from the source's chunks; whether it is due (full, or `within`
        passed). A chunk longer than the batch needs is cut: the batch takes its slice and
        the rest waits in `_rest` for the next one."""
        n, values, parts = self._n, self._values, self._parts
        assert parts is not None
        source = self._source
        chunks: deque[Chunk] = source.buffer  # type: ignore[assignment]
        rest = self._rest
        if rest is not None and source.closed:  # stopping: unstarted, as the buffer is
            source.dropped += len(rest[0].values) - rest[1]
            self._rest = rest = None
        while len(values) < n:
            if rest is not None:
                chunk, lo = rest
                self._rest = rest = None
            elif chunks:
                chunk, lo = chunks.popleft(), 0
                source.size -= len(chunk.values)
                if source.full and source.size <= source.low:
                    self._worker.conductor.drained(source)
            else:
                return False
            if not values:
                self._begin_batch()
            hi = min(len(chunk.values), lo + n - len(values))
            values += chunk.values[lo:hi] if lo or hi < len(chunk.values) else chunk.values
            parts.append((chunk, lo, hi))
            if hi < len(chunk.values):
                self._rest = (chunk, hi)
            if self._due is not None and self._loop.time() >= self._due:
                return True
        return True

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        n, loop = self._n, self._loop
        values, events = self._values, self._events
        source = self._source
        if self._parts is not None:
            if self._take_chunks():
                return self._emit()
            if not values:
                return EMPTY
            if (
                (self._due is not None and loop.time() >= self._due)
                or source.closed  # stopping: hand over the partial batch, then ack it
                or self._worker.drain_epoch > self._epoch  # `run_local` draining
            ):
                return self._emit()
            return EMPTY
        while len(values) < n:
            if up is source:
                # Straight from the buffer: a run of events per step, with no element tuple
                # and no coroutine each.
                buffer = source.buffer
                if buffer:
                    if not values:
                        self._begin_batch()
                    for _ in range(min(n - len(values), len(buffer))):
                        event = buffer.popleft()
                        values.append(event.value)
                        events.append(event)
                    if source.full and len(buffer) <= source.low:
                        self._worker.conductor.drained(source)
                    if self._due is not None and loop.time() >= self._due:
                        break
                    continue
                element: Pulled = EMPTY
            else:
                element = await up._pull()
            if element is EMPTY:
                if not values:
                    return element
                if (
                    (self._due is not None and loop.time() >= self._due)
                    or self._source.closed  # stopping: hand over the partial batch, then ack it
                    or self._worker.drain_epoch > self._epoch  # `run_local` draining
                ):
                    break
                return element
            value, carrier = cast(Element, element)
            if not values:
                self._begin_batch()
            values.append(value)
            if isinstance(carrier, list):
                events.extend(carrier)
            else:
                events.append(carrier)
            if self._due is not None and loop.time() >= self._due:
                break
        return self._emit()


def _revoked(chunk: Chunk, revoked: frozenset[Any]) -> bool:
    m = chunk.messages[0]
    return (m.topic, m.partition) in revoked
