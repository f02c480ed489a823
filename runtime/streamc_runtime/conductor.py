"""The Conductor: from the worker's one consumer to every stream subscribed to each topic.

For each fetched message it decodes the value once (and the key where decoding could fail;
other keys are decoded when first read), registers the message with its partition's offset
tracker carrying one reference per subscribed stream (set once, before fan-out, so no stream's
ack can bring the count to zero early), and appends one `Event` per stream. A message that fails
to decode is dead-lettered once, not once per subscriber, and then counts as done for all of
them. Streams whose buffer is full get their partitions paused until they drain to half.
That dead letter's send is the one await in a dispatch: partitions revoked during it get nothing
more from the batch.

The common case is cheaper: a topic with one subscribing stream read by a fused loop
(`SourceStream.chunked`). Its messages are gathered per contiguous run of one partition (at
most `HANDOUT_RUN`, so runs interleave as the transport handed them out), registered at once
(`PartitionOffsets.add_run`) and buffered as one `Chunk`: no `Event` and no offset entry per
message. A worker reading one topic decodes the whole batch at once; a message that fails to
decode ends the run before it (so registration stays in offset order) and is the only one that
takes the slow path, so every value is decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .events import Chunk, Event
from .offsets import PartitionOffsets
from .source import SourceStream
from .transport import HANDOUT_RUN, TP, Message

if TYPE_CHECKING:
    from .topic import Topic
    from .worker import Worker

__all__ = ["Conductor"]

# Decoded values of these types are immutable, so subscribers can share one object; anything
# else (records, lists) is decoded again per extra subscriber so one agent's processor cannot
# change what another agent sees.
_IMMUTABLE = (bytes, str, int, float, bool, type(None))

# A key left for the event to decode when first read.
_LAZY: Any = object()

_TOPIC_PARTITION = attrgetter("topic", "partition")
_PARTITION = attrgetter("partition")


class Conductor:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._routes: dict[str, list[SourceStream[Any]]] = {}
        self._topics: dict[str, Topic[Any]] = {}
        self.streams: list[SourceStream[Any]] = []
        self.changed = False  # subscriptions changed since the transport last subscribed

    def add(self, stream: SourceStream[Any]) -> None:
        self.streams.append(stream)
        for topic in stream.topics:
            self._routes.setdefault(topic.name, []).append(stream)
            self._topics[topic.name] = topic
        self.changed = True

    def topics(self) -> list[str]:
        return sorted(self._routes)

    def agents_of(self, topic: str) -> str:
        return ",".join(sorted({s._agent for s in self._routes.get(topic, ())}))

    async def dispatch(self, messages: Sequence[Message]) -> None:
        fast = {t for t, subs in self._routes.items() if len(subs) == 1 and subs[0].chunked}
        if not fast:
            await self._dispatch(messages)
            return
        # Runs of a topic whose one stream takes chunks are decoded by `map` and buffered
        # without a step of Python per message; whatever else (another topic, a value or key
        # that fails to decode or must be decoded now) goes through `_dispatch`, in order.
        # A worker reading one topic (the common case) groups by partition alone: cheaper
        # than a (topic, partition) tuple per message. Routes are only ever added and the
        # transport is subscribed to them, so no other topic's messages can come.
        only = next(iter(self._routes)) if len(self._routes) == 1 else None
        offsets = self._worker.offsets
        if only is not None and only in fast and self._keys_lazy(messages, only):
            # The whole batch decoded in one go (the calls per run cost as much again as the
            # decoding), up to a value that does not decode: that one goes through `_dispatch`,
            # and decoding goes on after it from the same iterator, so every value is decoded
            # once and a stretch of bad values is not scanned again after each of them.
            vdecode = self._topics[only].value_codec.decode_bytes
            raw: list[Any] = [m.value for m in messages]
            it = iter(raw)
            start = 0  # the first message not yet buffered or dispatched
            while True:
                if vdecode is None:  # raw bytes: a null value takes the slow path
                    try:
                        decoded = raw[start : raw.index(None, start)]
                    except ValueError:
                        decoded = raw[start:] if start else raw
                else:
                    decoded = []
                    try:
                        # `extend` appends as `map` yields: on a failure, `decoded` holds the
                        # values before the culprit, and `it` has moved past the culprit.
                        decoded.extend(map(vdecode, it))
                    except Exception:  # the slow path dead-letters it (or takes a null value)
                        pass
                n = len(decoded)
                if n:
                    stop = start + n
                    self._enqueue_batch(
                        only, messages if n == len(messages) else messages[start:stop], decoded
                    )
                    start = stop
                if start == len(messages):
                    return
                mark = offsets.revocations
                await self._dispatch([messages[start]])
                start += 1
                if offsets.revocations != mark:  # see `_dispatch`: revoked ones get no more
                    revoked = offsets.forgotten_since(mark)
                    messages = [
                        m for m in messages[start:] if TP(m.topic, m.partition) not in revoked
                    ]
                    raw = [m.value for m in messages]
                    it = iter(raw)
                    start = 0
        mark = offsets.revocations
        gone: set[TP] = set()
        slow: list[Message] = []
        for key, same in groupby(messages, _TOPIC_PARTITION if only is None else _PARTITION):
            run = list(same)
            name, partition = key if only is None else (only, key)
            tp = TP(name, partition)
            if tp in gone:
                continue
            values = self._decode_run(run, name) if name in fast else None
            if values is None:
                slow.extend(run)
                continue
            if slow:
                await self._dispatch(slow)
                slow = []
                if offsets.revocations != mark:  # see `_dispatch`: revoked ones get no more
                    gone = offsets.forgotten_since(mark)
                    if tp in gone:
                        continue
            state = offsets.get(tp)
            if state.start is None:
                state.start = run[0].offset
            stream = self._routes[name][0]
            kdecode = self._topics[name].key_codec.decode_bytes
            for i in range(0, len(run), HANDOUT_RUN):
                if len(run) <= HANDOUT_RUN:
                    _enqueue(stream, state, run, values, kdecode)
                else:
                    part = slice(i, i + HANDOUT_RUN)
                    _enqueue(stream, state, run[part], values[part], kdecode)
            stream.entered += len(run)
        if slow:
            await self._dispatch(slow)
        else:
            self._wake()

    def _enqueue_batch(self, name: str, messages: Sequence[Message], values: list[Any]) -> None:
        """Buffer a batch of one topic, every value decoded (`values`), as one `Chunk` per
        run of one partition (at most `HANDOUT_RUN`). Nothing awaits, so no revocation can
        come between the runs."""
        stream = self._routes[name][0]
        kdecode = self._topics[name].key_codec.decode_bytes
        offsets = self._worker.offsets
        append: Any = stream.buffer.append
        states: dict[int, PartitionOffsets] = {}
        i = 0
        for partition, same in groupby(messages, _PARTITION):
            run = list(same)
            n = len(run)
            state = states.get(partition)
            if state is None:
                state = states[partition] = offsets.get(TP(name, partition))
                if state.start is None:
                    state.start = run[0].offset
            if n <= HANDOUT_RUN:  # `_enqueue`, inlined for the common case
                entry = state.add_run(run[0].offset, run[-1].offset, n)
                append(Chunk(state, entry, run, values[i : i + n], kdecode))
                stream.size += n
            else:
                mine = values[i : i + n]  # not past the run: the next run's values follow
                for k in range(0, n, HANDOUT_RUN):
                    part = slice(k, k + HANDOUT_RUN)
                    _enqueue(stream, state, run[part], mine[part], kdecode)
            i += n
        stream.entered += i
        self._wake()

    def _keys_lazy(self, messages: Sequence[Message], name: str) -> bool:
        """Whether no key of `messages` (all of one topic) needs decoding now (see
        `_dispatch`): then so for any part of them."""
        kcodec = self._topics[name].key_codec
        if kcodec.decode_bytes is None:
            return True
        return kcodec.type is str and b"".join([k for m in messages if (k := m.key)]).isascii()

    def _decode_run(self, run: Sequence[Message], name: str) -> list[Any] | None:
        """The values of a run of messages, if every one decodes and no key needs decoding
        now (see `_dispatch`); else None."""
        topic = self._topics[name]
        kcodec, vcodec = topic.key_codec, topic.value_codec
        if kcodec.decode_bytes is not None:
            if kcodec.type is not str:
                return None
            # Comprehensions, not `map(attrgetter)`: an attribute read in a comprehension is
            # specialised by the interpreter, a third cheaper per message than the getter.
            if not b"".join([k for m in run if (k := m.key)]).isascii():
                return None
        raw: list[Any] = [m.value for m in run]
        vdecode = vcodec.decode_bytes
        if vdecode is None:
            return None if None in raw else raw
        try:
            return list(map(vdecode, raw))
        except Exception:  # the slow path dead-letters the culprit (None values go there too)
            return None

    async def _dispatch(self, messages: Sequence[Message]) -> None:
        # The hot path: state is looked up once per run of messages from one partition, and
        # the single-subscriber case registers and enqueues inline.
        worker = self._worker
        offsets = worker.offsets
        routes = self._routes
        last_topic: str | None = None
        last_partition = -1
        state: Any = None
        pending_append: Any = None
        refs: dict[int, int] = {}
        subs: list[SourceStream[Any]] = []
        single: Any = None  # the buffer's append when exactly one stream listens
        chunked: SourceStream[Any] | None = None  # ... and it takes `Chunk`s
        run_messages: list[Message] = []  # the chunk being gathered, and its values
        run_values: list[Any] = []
        kcodec: Any = None
        vcodec: Any = None
        kdecode: Any = None
        vdecode: Any = None
        share = True
        lazy_ascii = False  # str keys: ASCII ones are decoded on first read
        rest = iter(messages)  # what is left of the batch, should a revocation cut it short
        # Events entering each buffer are counted per batch, from the buffers' lengths.
        lengths = [(s, s.buffered()) for s in self.streams]
        for m in rest:
            if m.partition != last_partition or m.topic != last_topic:
                if run_messages:
                    assert chunked is not None
                    _enqueue(chunked, state, run_messages, run_values, kdecode)
                    run_messages, run_values = [], []
                last_topic, last_partition = m.topic, m.partition
                state = offsets.get(TP(m.topic, m.partition))
                if state.start is None:
                    state.start = m.offset
                pending_append = state._pending.append
                refs = state._refs
                subs = routes.get(m.topic, [])
                single = subs[0].buffer.append if len(subs) == 1 else None
                chunked = subs[0] if single is not None and subs[0].chunked else None
                if chunked is not None:
                    single = None
                if subs:
                    topic = self._topics[m.topic]
                    kcodec, vcodec = topic.key_codec, topic.value_codec
                    kdecode, vdecode = kcodec.decode_bytes, vcodec.decode_bytes
                    share = vcodec.type in _IMMUTABLE
                    lazy_ascii = kcodec.type is str
            offset = m.offset
            if not subs:
                state.position = offset + 1  # nobody listens (anymore): done on arrival
                continue
            try:
                k = m.key
                # Keys are decoded when first read (most pipelines never do), except where
                # decoding could fail: those are decoded now, so a bad key is dead-lettered
                # on arrival as before. ASCII is valid UTF-8, so an ASCII `str` key cannot fail.
                if k is None or kdecode is None or (lazy_ascii and k.isascii()):
                    key = _LAZY
                else:
                    key = kdecode(k)
                v = m.value
                value = vcodec.decode(v) if v is None else v if vdecode is None else vdecode(v)
            except Exception as exc:
                if run_messages:  # registered first: offsets register in order
                    assert chunked is not None
                    _enqueue(chunked, state, run_messages, run_values, kdecode)
                    run_messages, run_values = [], []
                state.add(offset, 1)
                mark = offsets.revocations
                _count_entered(lengths)  # agents take from the buffers while this awaits
                await worker.dead_letter_message(m, state, exc, self.agents_of(m.topic))
                lengths = [(s, s.buffered()) for s in self.streams]
                if offsets.revocations != mark:
                    # Partitions were revoked while the send waited (the Kafka coordinator
                    # runs beside us): the rest of their messages must register nothing, not
                    # in their closed state and not in a new one (a partition assigned back
                    # is fetched again from its commit, and offsets from this older fetch
                    # would sit ahead of the refetched ones). The rest starts afresh, with
                    # every state looked up again.
                    gone = offsets.forgotten_since(mark)
                    await self._dispatch([r for r in rest if TP(r.topic, r.partition) not in gone])
                    return
                continue
            if chunked is not None:
                run_messages.append(m)
                run_values.append(value)
                if len(run_messages) == HANDOUT_RUN:
                    _enqueue(chunked, state, run_messages, run_values, kdecode)
                    run_messages, run_values = [], []
                continue
            state.position = offset + 1
            if single is not None:
                pending_append(offset)
                refs[offset] = 1
                event = Event(m, value, state, kdecode)
                if key is not _LAZY:
                    event._key = key
                single(event)
                continue
            # Several subscribers: the count is set once, before any of them can ack.
            pending_append(offset)
            refs[offset] = len(subs)
            for i, stream in enumerate(subs):
                if i and not share and v is not None and vdecode is not None:
                    value = vdecode(v)
                if stream.chunked:  # a chunk of one, registered above with the others
                    chunk = Chunk(state, offset, [m], [value], kdecode)
                    stream.buffer.append(chunk)  # type: ignore[arg-type]
                    stream.size += 1
                    continue
                event = Event(m, value, state, kdecode)
                if key is not _LAZY:
                    event._key = key
                stream.buffer.append(event)
        if run_messages:
            assert chunked is not None
            _enqueue(chunked, state, run_messages, run_values, kdecode)
        _count_entered(lengths)
        self._wake()

    def _wake(self) -> None:
        for stream in self.streams:
            if stream.buffer:
                stream.wake()
                if stream.buffered() >= stream.capacity and not stream.full:
                    stream.full = True
                    self._apply_pauses()

    def _apply_pauses(self) -> None:
        full = {t.name for s in self.streams if s.full for t in s.topics}
        transport = self._worker.transport
        paused = [tp for tp in transport.assignment() if tp.topic in full]
        if paused:
            transport.pause(paused)
            self._worker.pauses += 1

    def drained(self, stream: SourceStream[Any]) -> None:
        """A full stream drained to its low-water mark: resume what no other full stream needs."""
        stream.full = False
        still_full = {t.name for s in self.streams if s.full for t in s.topics}
        names = {t.name for t in stream.topics} - still_full
        resume = [tp for tp in self._worker.transport.assignment() if tp.topic in names]
        if resume:
            self._worker.transport.resume(resume)

    def reapply(self) -> None:
        """After an assignment change, newly assigned partitions of full streams pause too."""
        if any(s.full for s in self.streams):
            self._apply_pauses()

    def revoke(self, revoked: set[TP] | frozenset[TP]) -> None:
        """Abandon buffered events of partitions leaving this worker (their new owner re-reads
        them from the committed offset)."""
        for stream in self.streams:
            if stream.chunked:
                self._revoke_chunks(stream, revoked)
            elif stream.buffer:
                kept = []
                for e in stream.buffer:
                    if (e.message.topic, e.message.partition) in revoked:
                        e._offsets.abandon(e.message.offset)
                    else:
                        kept.append(e)
                stream.dropped += len(stream.buffer) - len(kept)
                stream.buffer.clear()
                stream.buffer.extend(kept)
            # A full stream resumes when a pull drains it to half; if revocation emptied it,
            # no pull ever will, and the partitions it keeps would stay paused for good.
            if stream.full and stream.buffered() <= stream.low:
                self.drained(stream)

    def _revoke_chunks(self, stream: SourceStream[Any], revoked: set[TP] | frozenset[TP]) -> None:
        buffer: Any = stream.buffer
        kept: list[Chunk] = []
        for chunk in buffer:
            m = chunk.messages[0]
            if (m.topic, m.partition) in revoked:
                n = len(chunk.messages)
                # The rest of a chunk cut by a forward or an aggregate shares its entry with
                # the head they took: the head, once done, is committed (`abandon`).
                chunk.state.abandon(chunk.entry, n, m.offset)
                stream.dropped += n
                stream.size -= n
            else:
                kept.append(chunk)
        buffer.clear()
        buffer.extend(kept)


def _enqueue(
    stream: SourceStream[Any],
    state: PartitionOffsets,
    messages: list[Message],
    values: list[Any],
    kdecode: Any,
) -> None:
    """Register a gathered run of one partition's messages and buffer it as a `Chunk`."""
    entry = state.add_run(messages[0].offset, messages[-1].offset, len(messages))
    stream.buffer.append(Chunk(state, entry, messages, values, kdecode))  # type: ignore[arg-type]
    stream.size += len(messages)


def _count_entered(lengths: list[tuple[SourceStream[Any], int]]) -> None:
    for stream, before in lengths:
        stream.entered += stream.buffered() - before
