"""The element model a stream carries: `Event` (one message, decoded lazily), `Chunk` (a run
of one partition's messages buffered as one entry, for fused loops), the batch and member
carriers `take` and fused loops hand on, and the helpers that ack carriers and build the
key, headers and timestamp of what is forwarded from them. `EMPTY`, `Element` and `Pulled`
are what a node's pull returns (`streamc_runtime.stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final

import msgspec

from .offsets import PartitionOffsets
from .transport import Headers, Message

if TYPE_CHECKING:
    pass

KT = TypeVar("KT")
VT = TypeVar("VT")


# `Event._key` before the key is decoded.
_UNDECODED: Any = object()


class Event(msgspec.Struct, Generic[KT, VT], eq=False):
    """One message as delivered to one stream: decoded key and value plus the raw `message`.

    Acked automatically when the agent advances past it, when the agent raises while handling
    it, and at shutdown once handled; `await event.ack()` and `async with event:` ack early
    (a block left by an exception does not ack: the element is dead-lettered, then acked).
    Acking twice is harmless.

    The key is decoded on first use (`key`), since most pipelines never read it. The Conductor
    only leaves it undecoded when decoding cannot fail (raw bytes, or ASCII text for a `str`
    key), so a key that does not decode is still dead-lettered on arrival, never later.

    A `msgspec.Struct` (compared by identity, `eq=False`) because one is made per message per
    stream: its constructor runs in C, about a third of a Python `__init__`'s cost.
    """

    message: Message
    value: VT
    _offsets: PartitionOffsets
    _kdecode: Callable[[bytes], KT] | None = None  # None: the raw key bytes are the key
    _acked: bool = False
    _key: Any = _UNDECODED  # the decoded key, once decoded (by the Conductor or on first read)

    @property
    def key(self) -> KT:
        key = self._key
        if key is _UNDECODED:
            raw = self.message.key
            decode = self._kdecode
            key = self._key = raw if raw is None or decode is None else decode(raw)
        return cast(KT, key)

    @property
    def acked(self) -> bool:
        return self._acked

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            self._offsets.release(self.message.offset)

    async def ack(self) -> None:
        """Mark this event handled; its offset may be committed once every stream is done."""
        self._ack()

    async def __aenter__(self) -> Event[KT, VT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Raising out of the block leaves the ack to the runtime: the body raised while
        # handling this event, so it is dead-lettered and acked once the dead letter is
        # delivered (acking here would let a commit pass it before then).
        if exc_type is None:
            self._ack()

    def __repr__(self) -> str:
        m = self.message
        return f"<Event {m.topic}[{m.partition}]@{m.offset} key={self.key!r}>"


class Chunk:
    """What the Conductor buffers for a stream a fused loop reads straight from (`chunked`):
    a run of one partition's messages and their decoded values, registered with the
    partition's offsets as one entry (see `PartitionOffsets.add_run`). No `Event`
    is made per message; a `Run` makes one only for an element that needs it (a send, a
    dead letter, the element in hand when the body raises)."""

    __slots__ = ("cut", "done", "entry", "kdecode", "later", "messages", "state", "values")

    def __init__(
        self,
        state: PartitionOffsets,
        entry: int,
        messages: list[Message],
        values: list[Any],
        kdecode: Callable[[bytes], Any] | None,
    ) -> None:
        self.state = state
        self.entry = entry  # its entry's key in `state` (changes with `advance_run`)
        self.messages = messages
        self.values = values
        self.kdecode = kdecode
        self.cut: int | None = None  # the first offset dropped on revocation, if any
        # For `take` batches over chunks (`_Batch`): every member before `done` is done, and
        # the slices done out of order after it (`lo -> hi`), so the entry moves up only
        # past a prefix that is all done.
        self.done = 0
        self.later: dict[int, int] | None = None


class Members:
    """Members of one `Chunk` (their indexes in it, ascending) sent on by a forwarding task:
    acked as one release when the run they went out in is delivered, not one by one."""

    __slots__ = ("chunk", "indexes")

    def __init__(self, chunk: Chunk, indexes: list[int]) -> None:
        self.chunk = chunk
        self.indexes = indexes

    def ack(self) -> None:
        chunk = self.chunk
        chunk.state.release_members(chunk.entry, len(self.indexes))

    def member(self, i: int) -> Event[Any, Any]:
        """An `Event` for member `i` of the chunk (to dead-letter it on its own)."""
        chunk = self.chunk
        return _Member(
            chunk.messages[i], chunk.values[i], chunk.state, chunk.kdecode, _chunk=chunk
        )


def _slice_done(chunk: Chunk, lo: int, hi: int) -> None:
    """Members `lo` to `hi` of `chunk` are done (released, or held on their own): once all
    before them are too, its entry moves up so a commit covers them as it would one by one."""
    later = chunk.later
    if lo != chunk.done:
        if later is None:
            later = chunk.later = {}
        later[lo] = hi
        return
    while later and hi in later:
        hi = later.pop(hi)
    chunk.done = hi
    first = chunk.messages[hi].offset if hi < len(chunk.messages) else chunk.cut
    if first is not None:
        chunk.entry = chunk.state.advance_run(chunk.entry, first)


def _bounds(chunks: list[Chunk]) -> list[int]:
    if len(chunks) == 1:  # most runs are one chunk
        return [0]
    bounds = []
    n = 0
    for chunk in chunks:
        bounds.append(n)
        n += len(chunk.messages)
    return bounds


class _Member(Event[Any, Any], eq=False):
    """An `Event` for one element of a `Chunk`: its own ack is one of its run's members."""

    _chunk: Any = None

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            chunk = self._chunk
            chunk.state.release_members(chunk.entry, 1)


class _Batch(list[Event[Any, Any]]):
    """A `take` batch read straight from chunks: slices `(chunk, lo, hi)` of them, acked with
    one release per slice. Its events are made only when something walks them (a send, a
    dead letter, a forward's key): then each is a `_BatchMember`."""

    __slots__ = ("_acked", "_filled", "_left", "parts")

    def __init__(self, parts: list[tuple[Chunk, int, int]]) -> None:
        super().__init__()
        self.parts = parts
        self._acked = False
        self._filled = False
        self._left = 0  # members not acked on their own (once filled)

    def _fill(self) -> None:
        if self._filled:
            return
        self._filled = True
        acked = self._acked
        members = [
            _BatchMember(
                chunk.messages[i],
                chunk.values[i],
                chunk.state,
                chunk.kdecode,
                acked,
                _chunk=chunk,
                _batch=self,
            )
            for chunk, lo, hi in self.parts
            for i in range(lo, hi)
        ]
        self._left = 0 if acked else len(members)
        list.extend(self, members)

    def __iter__(self) -> Iterator[Event[Any, Any]]:
        self._fill()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return list.__len__(self)

    def __getitem__(self, i: Any) -> Any:
        self._fill()
        return list.__getitem__(self, i)

    def messages(self) -> Iterator[Message]:
        for chunk, lo, hi in self.parts:
            yield from chunk.messages[lo:hi]

    def ack(self) -> None:
        if self._acked:
            return
        self._acked = True
        members = list.__iter__(self) if self._filled else None  # in the parts' order
        for chunk, lo, hi in self.parts:
            count = hi - lo
            if members is not None:
                for _ in range(lo, hi):
                    event = next(members)
                    if event._acked:
                        count -= 1  # dead-lettered: released on its own
                    else:
                        event._acked = True
            if count:
                chunk.state.release_members(chunk.entry, count)
        self._settle()

    def _settle(self) -> None:
        for chunk, lo, hi in self.parts:
            _slice_done(chunk, lo, hi)


class _BatchMember(_Member, eq=False):
    """A member of a `_Batch` acked on its own (dead-lettered): once all are, so is the batch."""

    _batch: Any = None

    def _ack(self) -> None:
        if not self._acked:
            self._acked = True
            chunk = self._chunk
            chunk.state.release_members(chunk.entry, 1)
            batch = self._batch
            batch._left -= 1
            if not batch._left and not batch._acked:
                batch._acked = True
                batch._settle()


Carrier = Event[Any, Any] | list[Event[Any, Any]]


def carrier_events(carrier: Carrier) -> list[Event[Any, Any]]:
    return carrier if isinstance(carrier, list) else [carrier]


def ack_carrier(carrier: Carrier) -> None:
    if isinstance(carrier, list):
        if type(carrier) is _Batch:
            carrier.ack()
            return
        for event in carrier:  # `event._ack()`, inlined: batches are acked event by event
            if type(event) is not Event:
                event._ack()  # a member of a run (a nested `take`'s batch): its own release
            elif not event._acked:
                event._acked = True
                event._offsets.release(event.message.offset)
    else:
        carrier._ack()


def forwarded_key_headers(carrier: Carrier) -> tuple[bytes | None, Headers]:
    """The raw key and headers a forwarded element keeps: its message's, or for a batch the
    key all its messages share (else none) and no headers."""
    if isinstance(carrier, Event):
        message = carrier.message
        return message.key, message.headers
    if type(carrier) is _Batch:  # without making its events
        keys = {m.key for m in carrier.messages()}
        return (keys.pop() if len(keys) == 1 else None), ()
    first = carrier[0].message.key if carrier else None
    return (first if all(e.message.key == first for e in carrier) else None), ()


POSITION_HEADER = "streamc.position"


def positioned(message: Message, headers: Headers) -> Headers:
    """`headers` with the message's source position (`<topic>:<partition>:<offset>`) added,
    unless they carry one already (from further upstream: that one is the source)."""
    for name, _ in headers:
        if name == POSITION_HEADER:
            return headers
    mark = f"{message.topic}:{message.partition}:{message.offset}".encode()
    return (*headers, (POSITION_HEADER, mark))


def forwarded_timestamp(carrier: Carrier) -> int | None:
    """The timestamp a forwarded element keeps (milliseconds): its message's, or for a batch
    the latest of its messages' (as Kafka Streams does); None when there is none to keep."""
    if isinstance(carrier, Event):
        return carrier.message.timestamp
    if type(carrier) is _Batch:
        return max((m.timestamp for m in carrier.messages()), default=None)
    return max((e.message.timestamp for e in carrier), default=None)


@final
class _Empty:
    """No element available right now (not end of stream)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()
Element = tuple[Any, Carrier]
Pulled = Element | _Empty
