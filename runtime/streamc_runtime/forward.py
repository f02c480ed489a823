"""The operations that send values to topics: `echo`/`to` (`_Echo`, copies sent from the
agent's own pull) and `group_by`/`through` (`_Forward`, a background task moves upstream
values to a topic in runs and the node reads that topic back).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .events import (
    EMPTY,
    POSITION_HEADER,
    Carrier,
    Chunk,
    Element,
    Event,
    Members,
    Pulled,
    forwarded_key_headers,
    positioned,
)
from .source import _next_source_value
from .stream import _NOT_AWAITABLE, Stream, _Filter, _is_async, _Process, _settle
from .transport import Headers, RecordTooLargeError

if TYPE_CHECKING:
    from .topic import Topic


def _forwards_bytes(up: Stream[Any], topic: Topic[Any]) -> bool:
    """Whether the values `up` yields go to `topic` as their messages' own value bytes rather
    than encoded again: no hook can have changed them, and `topic` carries the type they were
    decoded as. Re-encoding would drop the fields the record does not declare and write out
    defaults the producer never sent; the bytes are also cheaper."""
    return up._unchanged() and all(t.value_type == topic.value_type for t in up._source.topics)


class _Echo(Stream[Any]):
    _op = "echo"

    def __init__(self, up: Stream[Any], topics: tuple[Topic[Any], ...], op: str) -> None:
        super().__init__(up._worker, up, up._source)
        self._topics = topics
        self._op = op
        self._targets = [(topic, _forwards_bytes(up, topic)) for topic in topics]

    def _may_wait(self) -> bool:
        return True  # it awaits its sends

    async def _pull(self) -> Pulled:
        up = self._up
        assert up is not None
        worker = self._worker
        while True:
            element = await up._pull()
            if element is EMPTY:
                return element
            value, carrier = cast(Element, element)
            try:
                for topic, as_received in self._targets:
                    await worker.forward(topic, value, carrier, as_received=as_received)
            except Exception as exc:
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            return element


# The most elements one forwarding run sends at once (a run ends earlier when upstream has
# nothing more buffered).
_RUN_MAX = 1000

# The most `str` keys a forwarding task remembers the encoding of (see `_encode_str_key`).
_KEY_CACHE_MAX = 65536


class _Forward(Stream[Any]):
    """`group_by` and `through`: a background task moves upstream values to `topic`; this node
    reads `topic` back through its own buffer, as every other subscriber would."""

    def __init__(
        self,
        up: Stream[Any],
        topic: Topic[Any],
        key_fn: Callable[[Any], Any] | None,
        op: str,
        key_check: Callable[[Any], Any] | None = None,
    ) -> None:
        source = up._worker.source_for((topic,), up._agent)
        super().__init__(up._worker, up, source)
        self._op = op
        self._topic = topic
        self._key_fn = key_fn
        self._key_check = key_check
        self._key_async = key_fn is not None and _is_async(key_fn)
        self._as_received = _forwards_bytes(up, topic)
        self._key_bytes: dict[str, bytes] = {}  # see `_encode_str_key`
        if self._fused_steps() is not None:
            # The forwarding task reads the source buffer itself (`_run_fused`), nothing
            # pulls from it: the Conductor can hand it whole `Chunk`s, no `Event` each.
            up._source.chunk()
        self._worker.spawn_driver(self._run(), f"{self._agent}:{op}:{topic.name}")

    def _fused_steps(self) -> list[tuple[bool, Callable[[Any], Any], Any]] | None:
        """The sync processors and filters between the source buffer and this node, in order
        as `(is_filter, hook, check)`, when that is all there is (and the key function is sync):
        the forwarding task then applies them to each run in one plain loop (`_run_fused`).
        None when anything else is upstream."""
        if self._key_async:
            return None
        steps: list[tuple[bool, Callable[[Any], Any], Any]] = []
        node = self._up
        while node is not None and node is not node._source:
            if isinstance(node, _Process) and not node._waits:
                steps[:0] = [(False, fn, check) for fn, _, check in node._fns]
            elif isinstance(node, _Filter) and not node._waits:
                steps.insert(0, (True, node._pred, node._check))
            else:
                return None
            node = node._up
        return steps

    async def _run(self) -> None:
        # Elements are sent in runs, each run as soon as upstream has nothing more at hand (or
        # at _RUN_MAX): one `send_many` and one delivery callback per run, not per element.
        # A hook or encoding that fails dead-letters its own element; the run goes on.
        up = self._up
        assert up is not None
        steps = self._fused_steps()
        if steps is not None:
            await self._run_fused(steps)
            return
        source = up._source
        worker, topic, key_fn, key_async = self._worker, self._topic, self._key_fn, self._key_async
        key_check = self._key_check
        encode_key, encode_value = topic.key_codec.encode, topic.value_codec.encode
        as_received = self._as_received  # then every carrier is an Event
        positions = topic.positions  # an aggregation reads on: records carry their source
        records: list[tuple[bytes | None, bytes | None, Headers]] = []
        carriers: list[Carrier] = []
        may_wait = False  # whether pulling the next element may wait on a hook (per run)
        while True:
            if records and may_wait:
                # What is done goes out before an async hook gets to hold it back.
                await self._send_run(records, carriers)
                records, carriers = [], []
            element = await up._pull()
            if element is EMPTY:
                if records:
                    await self._send_run(records, carriers)
                    records, carriers = [], []
                    continue
                if source.closed:
                    return
                await source.wait(up._deadline())
                continue
            value, carrier = cast(Element, element)
            if not records:
                may_wait = up._may_wait()
            try:
                raw_key, headers = forwarded_key_headers(carrier)
                if positions and type(carrier) is Event:
                    headers = positioned(carrier.message, headers)
                if key_fn is not None:
                    key = key_fn(value)
                    if key_async or type(key) not in _NOT_AWAITABLE:
                        if records and (key_async or inspect.isawaitable(key)):
                            await self._send_run(records, carriers)  # before the key waits
                            records, carriers = [], []
                        key = await _settle(key, key_async)
                    if key_check is not None:
                        key = key_check(key)
                    if type(key) is str:
                        raw_key = self._key_bytes.get(key)
                        if raw_key is None:
                            raw_key = self._encode_str_key(key)
                    else:
                        raw_key = encode_key(key)
                if as_received:
                    data = carrier.message.value  # type: ignore[union-attr]
                else:
                    data = encode_value(value)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a hook's SystemExit too: see the module docstring
                await worker.dead_letter(carrier, exc, self._agent)
                continue
            records.append((raw_key, data, headers))
            carriers.append(carrier)
            if len(records) >= _RUN_MAX:
                await self._send_run(records, carriers)
                records, carriers = [], []

    async def _run_fused(self, steps: list[tuple[bool, Callable[[Any], Any], Any]]) -> None:
        """`_run` for a stateless chain over the source: each run of buffered chunks goes
        through the hooks and out in one loop, with no pull (a coroutine per element per
        operation) in between and no `Event` per element. Per chunk, the elements filtered
        out are released at once, a dead-lettered one on its own (its dead letter holds it),
        and those sent are acked as one (`Members`) when their run is delivered: the chunk's
        one offsets entry keeps every commit before the first of them until then. Same
        dead-lettering and order as `_run`."""
        up = self._up
        assert up is not None
        source = up._source
        buffer = cast("deque[Chunk]", source.buffer)
        popleft = buffer.popleft
        worker, key_fn, key_check = self._worker, self._key_fn, self._key_check
        encode_key, encode_value = self._topic.key_codec.encode, self._topic.value_codec.encode
        as_received, positions, agent = self._as_received, self._topic.positions, self._agent
        not_awaitable = _NOT_AWAITABLE
        key_bytes = self._key_bytes
        while True:
            if not buffer:
                if source.closed:
                    return
                await source.wait(None)
                continue
            if source.sample:
                source.sample_tick()
            # Chunks up to `_RUN_MAX` elements; one that does not fit is cut, its rest left
            # at the head of the buffer (both parts are members of its one offsets entry).
            chunks: list[Chunk] = []
            room = _RUN_MAX
            while buffer:
                chunk = buffer[0]
                n = len(chunk.values)
                if n > room:
                    messages, values = chunk.messages, chunk.values
                    part = Chunk(chunk.state, chunk.entry, messages[:room], values[:room], None)
                    part.kdecode = chunk.kdecode
                    chunks.append(part)
                    chunk.messages, chunk.values = messages[room:], values[room:]
                    room = 0
                    break
                chunks.append(popleft())
                room -= n
            taken = _RUN_MAX - room
            source.size -= taken
            if source.full and source.size <= source.low:
                worker.conductor.drained(source)
            records: list[tuple[bytes | None, bytes | None, Headers]] = []
            acks: list[Members] = []
            stamps: list[int | None] = []
            for chunk in chunks:
                messages = chunk.messages
                if positions and messages:
                    # One partition's messages: their position header is formatted once per
                    # chunk, with each record's offset filled in (`positioned`'s mark).
                    first = messages[0]
                    mark = f"{first.topic}:{first.partition}:".encode().replace(b"%", b"%%")
                    mark += b"%d"
                sent: list[int] = []  # members of this chunk in `records`, not in `acks` yet
                dropped = 0  # members filtered out
                for i, value in enumerate(chunk.values):
                    try:
                        for is_filter, fn, check in steps:
                            result = fn(value)
                            if type(result) not in not_awaitable:
                                if records and inspect.isawaitable(result):
                                    if sent:
                                        acks.append(Members(chunk, sent))
                                        sent = []
                                    await self._send_chunks(records, acks, stamps)
                                    records, acks, stamps = [], [], []
                                result = await _settle(result, False)
                            if check is not None:
                                result = check(result)
                            if not is_filter:
                                value = result
                            elif not result:
                                break
                        else:
                            message = messages[i]
                            raw_key, headers = message.key, message.headers
                            if positions:
                                if headers:
                                    headers = positioned(message, headers)
                                else:  # a list: the Kafka transport's batch builder takes that
                                    headers = [(POSITION_HEADER, mark % message.offset)]
                            if key_fn is not None:
                                key = key_fn(value)
                                if type(key) not in not_awaitable:
                                    if records and inspect.isawaitable(key):
                                        if sent:
                                            acks.append(Members(chunk, sent))
                                            sent = []
                                        await self._send_chunks(records, acks, stamps)
                                        records, acks, stamps = [], [], []
                                    key = await _settle(key, False)
                                if key_check is not None:
                                    key = key_check(key)
                                if type(key) is str:
                                    raw_key = key_bytes.get(key)
                                    if raw_key is None:
                                        raw_key = self._encode_str_key(key)
                                else:
                                    raw_key = encode_key(key)
                            data = message.value if as_received else encode_value(value)
                            records.append((raw_key, data, headers))
                            sent.append(i)
                            stamps.append(message.timestamp)
                            continue
                        dropped += 1  # filtered out: handled
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:  # a hook's SystemExit too
                        await worker.dead_letter(Members(chunk, []).member(i), exc, agent)
                if dropped:
                    chunk.state.release_members(chunk.entry, dropped)
                if sent:
                    acks.append(Members(chunk, sent))
            if records:
                await self._send_chunks(records, acks, stamps)
            left = source.until_check - taken
            if left > 0:
                source.until_check = left
            else:
                await source.share_loop()

    async def _send_chunks(
        self,
        records: list[tuple[bytes | None, bytes | None, Headers]],
        acks: list[Members],
        timestamps: list[int | None],
    ) -> None:
        """`_send_run` for `_run_fused`: `acks` hold the records' elements in order."""
        try:
            await self._worker.forward_run(self._topic, records, acks, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent
            refused = set(exc.indexes)
            owners = [(members, i) for members in acks for i in members.indexes]
            for r in sorted(refused):
                members, i = owners[r]
                await self._worker.dead_letter(members.member(i), exc, self._agent)
            kept: dict[Members, list[int]] = {}
            for r, (members, i) in enumerate(owners):
                if r not in refused:
                    kept.setdefault(members, []).append(i)
            if kept:
                await self._send_chunks(
                    [records[r] for r in range(len(records)) if r not in refused],
                    [Members(members.chunk, indexes) for members, indexes in kept.items()],
                    [timestamps[r] for r in range(len(records)) if r not in refused],
                )
        # Any other failure is the transport's: see `_send_run`.

    def _encode_str_key(self, key: str) -> bytes | None:
        """The topic's encoding of a `str` key, remembered: a `group_by` key repeats (that is
        its point), and a dict look-up costs a fraction of the encode. The codec is a pure
        function of the string, so the cache changes nothing but the cost; a key that fails
        to encode raises here every time and is never remembered."""
        raw_key = self._topic.key_codec.encode(key)
        if raw_key is not None:
            key_bytes = self._key_bytes
            if len(key_bytes) >= _KEY_CACHE_MAX:
                key_bytes.clear()  # many distinct keys: start again rather than grow
            key_bytes[key] = raw_key
        return raw_key

    async def _send_run(
        self,
        records: list[tuple[bytes | None, bytes | None, Headers]],
        carriers: list[Carrier],
        timestamps: list[int | None] | None = None,
    ) -> None:
        worker = self._worker
        try:
            await worker.forward_run(self._topic, records, carriers, timestamps)
        except RecordTooLargeError as exc:  # refused before anything was sent
            refused = set(exc.indexes)
            for i in sorted(refused):
                await worker.dead_letter(carriers[i], exc, self._agent)
            kept = [i for i in range(len(records)) if i not in refused]
            if kept:
                await self._send_run(
                    [records[i] for i in kept],
                    [carriers[i] for i in kept],
                    None if timestamps is None else [timestamps[i] for i in kept],
                )
        # Any other failure is the transport's, not the data's: `forward_run` retried it and
        # stopped the worker with the run unacked, so nothing is dead-lettered for it.

    async def _pull(self) -> Pulled:
        return await self._source._pull()

    __anext__ = _next_source_value

    def _deadline(self) -> float | None:
        return None  # upstream deadlines belong to the forwarding task, not to this reader

    def _unchanged(self) -> bool:
        return True  # this reader yields what it decodes from `topic`

    def _may_wait(self) -> bool:
        return False  # this reader only reads its own buffer; the forwarding task does the rest
