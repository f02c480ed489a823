"""`SourceStream`, the root of a stream chain: the bounded buffer of events the Conductor
fills and agents wait on, with back-pressure, loop sharing (`share_loop`) and sampled
processing time; and the inlined `__anext__` of nodes that hand its events on as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .events import (
    EMPTY,
    Chunk,
    Event,
    Pulled,
)
from .latency import Latency
from .stream import Stream

if TYPE_CHECKING:
    from .topic import Topic
    from .worker import Worker

T = TypeVar("T")


# An agent taking events from its buffer yields to the event loop once it has run this long
# (seconds) without a yield, looking at the clock every `_CHECK_EVERY` events (see
# `SourceStream.share_loop`).
_YIELD_AFTER = 0.01
_CHECK_EVERY = 64


async def _next_source_value(node: Stream[Any]) -> Any:
    """`async for value in node` where `node` hands over its `source`'s events as they are (the
    source itself, or the read-back side of `group_by`/`through`): the common path, inlined,
    with the ack of the previous event (always a single Event here) done in place. It is the
    `__anext__` of both, not called from one: a coroutine frame per element is measurable."""
    source = node._source
    if source.sample:
        source.sample_tick()
    current = node._current
    if current is not None:
        node._current = None
        if not current._acked:  # type: ignore[union-attr]
            current._acked = True  # type: ignore[union-attr]
            current._offsets.release(current.message.offset)  # type: ignore[union-attr]
    left = source.until_check - 1
    if left:
        source.until_check = left
    else:
        await source.share_loop()
    buffer = source.buffer
    while not buffer:
        if source.closed:
            raise StopAsyncIteration
        await source.wait(None)
    event = buffer.popleft()
    if source.full and len(buffer) <= source.low:
        source._worker.conductor.drained(source)
    node._current = event
    return event.value


class SourceStream(Stream[T]):
    """The root of a chain: a bounded buffer of events from one or more topics (`&`)."""

    _op = "source"

    def __init__(self, worker: Worker, topics: tuple[Topic[Any], ...], agent: str) -> None:
        super().__init__(worker, None, None)
        self._agent = agent
        self.topics = topics
        self.buffer: deque[Event[Any, Any]] = deque()
        # Set once a fused loop reads straight from this stream (`runs()`): the buffer then
        # holds `Chunk`s, `size` counting their messages.
        self.chunked = False
        self.size = 0
        self.capacity = worker.buffer_size
        self.low = max(worker.buffer_size // 2, 1)  # drained: resume the paused partitions
        self.full = False  # back-pressure engaged: the Conductor paused our partitions
        self.closed = False
        # Events handed out until `share_loop` looks at the clock, how many that was, when it
        # last looked and when it last yielded.
        self.until_check = _CHECK_EVERY
        self._check_every = _CHECK_EVERY
        self._checked_at = 0.0
        self._yielded_at = 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()
        # For metrics, kept per dispatched batch rather than per element: events that entered
        # the buffer, and those dropped from it unread (revocation, stop).
        self.entered = 0
        self.dropped = 0
        # Sampled processing time: a sampler sets `sample`; the next element handed out is
        # timed until the agent asks for the one after it (one flag test per element).
        self.sample = False
        self.latency = Latency()
        self._sample_t0 = 0.0
        self._sample_n = 1  # elements the timed stretch holds (a node taking runs: `sample_run`)

    __anext__ = _next_source_value

    def sample_tick(self) -> None:
        now = time.perf_counter()
        if self._sample_t0:
            self.latency.observe((now - self._sample_t0) / self._sample_n)
            self._sample_t0 = 0.0
            self.sample = False
        elif self.buffer:  # an element is handed out now, without waiting: time it
            self._sample_t0 = now
            self._sample_n = 1

    def sample_run(self, taken: int) -> bool:
        """`sample_tick` for a node that takes its elements in runs (`aggregate`), called as
        it takes a run of `taken`: ends the timed run, each of its elements timed at its share
        of the run (True), else times this one if it holds any (False)."""
        now = time.perf_counter()
        if self._sample_t0:
            self.latency.observe((now - self._sample_t0) / self._sample_n)
            self._sample_t0 = 0.0
            self.sample = False
            return True
        if taken:
            self._sample_t0 = now
            self._sample_n = taken
        return False

    async def _pull(self) -> Pulled:
        if self.sample:
            self.sample_tick()
        left = self.until_check - 1
        if left:
            self.until_check = left
        else:
            await self.share_loop()
        buffer = self.buffer
        if not buffer:
            return EMPTY
        event = buffer.popleft()
        if self.full and len(buffer) <= self.low:
            self._worker.conductor.drained(self)
        return (event.value, event)

    async def share_loop(self) -> None:
        """Yield to the event loop if the agent has run `_YIELD_AFTER` seconds without.

        An agent with events buffered never waits, so a slow (CPU-bound) body would keep the
        fetch loop, the producer's sends and the commit loop from running for a whole buffer
        of events. A yield per event (or every few) costs a fast agent a third of its speed;
        a look at the clock every `_CHECK_EVERY` events costs nothing. A slow body looks
        sooner: after as many events as took half of `_YIELD_AFTER` at the pace just seen. At
        a millisecond an event, 64 events held the loop for 64 ms a turn, and a commit (a
        flush, then the commit request: a dozen turns of the loop) took a second."""
        now = self._loop.time()
        spent = now - self._checked_at
        n = self._check_every
        if spent * 2 * _CHECK_EVERY > _YIELD_AFTER * n:  # slower than _CHECK_EVERY per 5 ms
            n = max(1, int(n * _YIELD_AFTER / (2 * spent)))
        else:
            n = _CHECK_EVERY
        self.until_check = self._check_every = n
        self._checked_at = now
        if now - self._yielded_at >= _YIELD_AFTER:
            await asyncio.sleep(0)
            # The pace is the body's own: what other tasks did meanwhile does not count.
            self._yielded_at = self._checked_at = self._loop.time()

    def wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, deadline: float | None) -> None:
        """Until the buffer has data, the stream closes, a drain is requested or `deadline`."""
        if self.buffer or self.closed:
            return
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()
        handle = None
        if deadline is not None:
            delay = deadline - loop.time()
            if delay <= 0:
                return
            handle = loop.call_later(delay, _resolve, fut)
        self._waiters.append(fut)
        worker = self._worker
        worker.waiting += 1
        try:
            await fut
        finally:
            worker.waiting -= 1
            if handle is not None:
                handle.cancel()

    def buffered(self) -> int:
        """Messages waiting in the buffer."""
        return self.size if self.chunked else len(self.buffer)

    def chunk(self) -> None:
        """From now on the Conductor buffers `Chunk`s; events already buffered become
        chunks of one (each still registered on its own)."""
        if self.chunked:
            return
        self.chunked = True
        events = list(self.buffer)
        self.buffer.clear()
        chunks = cast("deque[Any]", self.buffer)
        for e in events:
            m = e.message
            chunks.append(Chunk(e._offsets, m.offset, [m], [e.value], e._kdecode))
        self.size = len(events)

    def close(self) -> None:
        """Stop delivering: buffered events are abandoned unacked (redelivered after restart)."""
        self.closed = True
        self.dropped += self.buffered()
        if self.chunked:
            # A chunk's rest a forward or an aggregate cut shares its entry with the head they
            # took and still finish: the stop's commit covers that head (`abandon`).
            for chunk in cast("deque[Chunk]", self.buffer):
                chunk.state.abandon(chunk.entry, len(chunk.messages), chunk.messages[0].offset)
        self.buffer.clear()
        self.size = 0
        self.wake()

    def _deadline(self) -> float | None:
        return None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
