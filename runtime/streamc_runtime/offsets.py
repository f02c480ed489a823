"""Per-partition offset tracking: which offsets may be committed.

Every fetched message is registered with the number of references it carries (one per
subscribed stream, plus one per pending forward or dead-letter send). A message is *done* when its
count reaches zero. The committable offset of a partition is one past the longest run of done
messages: the first offset still in flight, or one past the highest offset seen when nothing is
in flight. Because in-flight offsets sit in a FIFO in fetch (= offset) order and only the head
decides, a late ack of an early message can never be jumped over, whatever order acks arrive in
(Faust's `_new_offset` can commit past a gap; this cannot). Gaps in the offset sequence
(compaction, transaction markers) need no special case: only offsets actually fetched are tracked.

The in-order case is the hot path: `add` is an append and a dict store, `release` a decrement,
a popleft and a dict delete.

A fused loop's input is cheaper still: the Conductor registers a contiguous run of one
partition's messages at once (`add_run`: one entry counting its messages, keyed `~first` so no
offset is ever taken for it) and the run is acked with one `release_members`. Its elements are
still held one by one: a hold on an offset inside a run (a dead letter or a send not yet
delivered) is kept apart, beside the run's count, and `committable` never passes it, even once
the rest of the run is done. When the elements before some member are all done (a fused loop's
`flush`, or a revocation mid-run) `advance_run` moves the run's entry up to that member, so a
commit covers what is done as it would have one by one.
"""

from __future__ import annotations

from collections import deque

from .transport import TP

__all__ = ["OffsetTracker", "PartitionOffsets"]


class PartitionOffsets:
    """The in-flight messages of one partition, as assigned to this worker."""

    __slots__ = (
        "_abandoned",
        "_cuts",
        "_inner",
        "_pending",
        "_refs",
        "closed",
        "committed",
        "position",
        "start",
        "tp",
    )

    def __init__(self, tp: TP, committed: int | None = None) -> None:
        self.tp = tp
        self._pending: deque[int] = deque()  # in-flight offsets, ascending
        self._refs: dict[int, int] = {}  # offset -> outstanding references (0 = done, not head)
        self.position: int | None = None  # one past the highest offset registered
        # The first offset registered (set by the Conductor): where this worker started
        # reading; a committable offset past it means something was processed.
        self.start: int | None = None
        self.committed = committed  # last offset handed to the transport's commit
        self.closed = False  # set on revocation: late acks of old events are ignored
        self._abandoned: dict[int, int] = {}  # offset -> references dropped on revocation
        # run key -> the lowest offset of its members dropped on revocation (see `abandon`)
        self._cuts: dict[int, int] = {}
        self._inner: dict[int, int] = {}  # offset inside a run -> holds on it alone

    def add(self, offset: int, refs: int) -> None:
        """Register a fetched message carrying `refs` references (0 = done on arrival)."""
        if refs > 0:
            self._pending.append(offset)
            self._refs[offset] = refs
        self.position = offset + 1

    def add_run(self, first: int, last: int, count: int) -> int:
        """Register `count` fetched messages from `first` to `last` (ascending, gaps allowed)
        as one entry carrying one reference per message; returns the entry's key for
        `release_members`. Keys of runs (`~first`, negative) are never an offset, so a
        release or hold of any member's own offset never touches the run's count."""
        key = ~first
        self._pending.append(key)
        self._refs[key] = count
        self.position = last + 1
        return key

    def hold(self, offset: int) -> None:
        """Add one reference to a message still in flight (e.g. a send not yet delivered)."""
        refs = self._refs
        if offset in refs:
            refs[offset] += 1
        elif self._in_run(offset):
            inner = self._inner
            inner[offset] = inner.get(offset, 0) + 1

    def _in_run(self, offset: int) -> bool:
        # Holds only come for messages in flight. Entries leave from the head only, so an
        # offset from the head on that has no entry of its own is a run's member (or a gap,
        # which nothing holds): no search through the runs.
        pending = self._pending
        position = self.position
        if not pending or position is None:
            return False
        head = pending[0]
        return (~head if head < 0 else head) <= offset < position

    def release(self, offset: int) -> None:
        """Drop one reference; when the last one goes the message is done."""
        refs = self._refs
        try:
            n = refs[offset]
        except KeyError:  # revoked partition, unknown offset, or a hold inside a run
            if self._inner:
                self._unhold(offset)
            return
        if n > 1:
            refs[offset] = n - 1
            return
        pending = self._pending
        if pending[0] != offset:
            refs[offset] = 0  # done, but an earlier message still holds the commit back
            return
        pending.popleft()
        del refs[offset]
        while pending and refs[pending[0]] == 0:
            del refs[pending.popleft()]

    def _unhold(self, offset: int) -> None:
        inner = self._inner
        n = inner.get(offset)
        if n is None:
            return
        if n > 1:
            inner[offset] = n - 1
        else:
            del inner[offset]

    def release_members(self, key: int, count: int) -> None:
        """`count` members of the run (or the single message) registered as `key` are done."""
        refs = self._refs
        n = refs.get(key)
        if n is None:  # revoked partition
            return
        n -= count
        if n > 0:
            refs[key] = n
            return
        refs[key] = 0
        pending = self._pending
        while pending and refs[pending[0]] == 0:
            del refs[pending.popleft()]

    def advance_run(self, key: int, to: int) -> int:
        """Every member of the run registered as `key` before offset `to` (a member) is done:
        the run now starts at `to`, so what is done becomes committable. Returns its new key."""
        refs = self._refs
        new = ~to
        if key not in refs or key == new:
            return key
        pending = self._pending
        pending[pending.index(key)] = new  # the head, bar a revocation while runs queue
        refs[new] = refs.pop(key)
        abandoned = self._abandoned.pop(key, None)
        if abandoned is not None:
            self._abandoned[new] = abandoned
        cut = self._cuts.pop(key, None)
        if cut is not None:
            self._cuts[new] = cut
        return new

    def abandon(self, offset: int, count: int = 1, first: int | None = None) -> None:
        """References that will never be released (work dropped on revocation; `count`
        members of a run registered at `offset`): the messages stay uncommitted, but `busy`
        no longer waits for them. `first`: the lowest offset among those members; once every
        other reference of the run is released, what is before it is done, and a commit
        covers it (as it would have message by message: a run cut by a forward or an
        aggregate has its head taken and handled while its rest is dropped)."""
        if offset in self._refs:
            self._abandoned[offset] = self._abandoned.get(offset, 0) + count
            if first is not None and offset < 0:
                cut = self._cuts.get(offset)
                self._cuts[offset] = first if cut is None or first < cut else cut

    def busy(self) -> bool:
        """Whether some in-flight message still has a reference that will be released."""
        abandoned = self._abandoned
        return bool(self._inner) or any(n > abandoned.get(o, 0) for o, n in self._refs.items())

    def refs(self, offset: int) -> int:
        """Outstanding references of a registered message (0 once done); for a member of a
        run, its own holds (the run's count is the run's, at its key)."""
        return self._refs.get(offset, 0) or self._inner.get(offset, 0)

    def close(self) -> None:
        self.closed = True
        self._refs.clear()
        self._pending.clear()
        self._abandoned.clear()
        self._cuts.clear()
        self._inner.clear()

    @property
    def in_flight(self) -> int:
        """Messages registered and not yet done (a run's members counted one by one)."""
        return sum((n if o < 0 else 1) for o, n in self._refs.items() if n)

    def committable(self) -> int | None:
        """The offset to commit: the first one in flight, else one past the last seen; never
        past a member of a run held on its own."""
        if self._pending:
            offset: int | None = self._pending[0]
            if offset is not None and offset < 0:
                key = offset
                offset = ~key  # a run's key
                if self._cuts and self._refs[key] == self._abandoned.get(key):
                    cut = self._cuts.get(key)
                    if cut is not None and cut > offset:
                        offset = cut  # all it kept is done
        else:
            offset = self.position
        if self._inner:
            held = min(self._inner)
            return held if offset is None or held < offset else offset
        return offset

    def progressed(self) -> bool:
        """Whether something this worker processed is committable and not committed yet."""
        offset = self.committable()
        if offset is None:
            return False
        mark = self.committed if self.committed is not None else self.start
        return mark is None or offset > mark

    def to_commit(self) -> int | None:
        """The committable offset if it moved past the last commit, else None."""
        offset = self.committable()
        if offset is None or (self.committed is not None and offset <= self.committed):
            return None
        return offset


class OffsetTracker:
    """The `PartitionOffsets` of every partition this worker currently owns."""

    __slots__ = ("_forgotten", "partitions", "revocations")

    def __init__(self) -> None:
        self.partitions: dict[TP, PartitionOffsets] = {}
        self.revocations = 0  # how many times `forget` ran: a mark for `forgotten_since`
        self._forgotten: dict[TP, int] = {}  # partition -> the revocation that last dropped it

    def get(self, tp: TP) -> PartitionOffsets:
        state = self.partitions.get(tp)
        if state is None:
            state = self.partitions[tp] = PartitionOffsets(tp)
        return state

    def to_commit(self, only: frozenset[TP] | set[TP] | None = None) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for tp, state in self.partitions.items():
            if only is not None and tp not in only:
                continue
            offset = state.to_commit()
            if offset is not None:
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            state = self.partitions.get(tp)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset

    def forget(self, tps: set[TP] | frozenset[TP]) -> None:
        """Drop revoked partitions; events still holding them ack into a closed tracker."""
        self.revocations += 1
        for tp in tps:
            self._forgotten[tp] = self.revocations
            state = self.partitions.pop(tp, None)
            if state is not None:
                state.close()

    def forgotten_since(self, mark: int) -> set[TP]:
        """The partitions revoked after `revocations` was `mark` (assigned back since, or not)."""
        return {tp for tp, n in self._forgotten.items() if n > mark}

    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.partitions.values())

    def idle(self) -> bool:
        return all(s.committable() == s.position for s in self.partitions.values())
