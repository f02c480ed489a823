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
"""

from __future__ import annotations

from collections import deque

from .transport import TP

__all__ = ["OffsetTracker", "PartitionOffsets"]


class PartitionOffsets:
    """The in-flight messages of one partition, as assigned to this worker."""

    __slots__ = (
        "_abandoned",
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

    def add(self, offset: int, refs: int) -> None:
        """Register a fetched message carrying `refs` references (0 = done on arrival)."""
        if refs > 0:
            self._pending.append(offset)
            self._refs[offset] = refs
        self.position = offset + 1

    def hold(self, offset: int) -> None:
        """Add one reference to a message still in flight (e.g. a send not yet delivered)."""
        refs = self._refs
        if offset in refs:
            refs[offset] += 1

    def release(self, offset: int) -> None:
        """Drop one reference; when the last one goes the message is done."""
        refs = self._refs
        try:
            n = refs[offset]
        except KeyError:  # revoked partition or unknown offset: nothing to do
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

    def abandon(self, offset: int) -> None:
        """A reference that will never be released (work dropped on revocation): the message
        stays uncommitted, but `busy` no longer waits for it."""
        if offset in self._refs:
            self._abandoned[offset] = self._abandoned.get(offset, 0) + 1

    def busy(self) -> bool:
        """Whether some in-flight message still has a reference that will be released."""
        abandoned = self._abandoned
        return any(n > abandoned.get(o, 0) for o, n in self._refs.items())

    def refs(self, offset: int) -> int:
        """Outstanding references of a registered message (0 once done)."""
        return self._refs.get(offset, 0)

    def close(self) -> None:
        self.closed = True
        self._refs.clear()
        self._pending.clear()
        self._abandoned.clear()

    @property
    def in_flight(self) -> int:
        """Messages registered and not yet done."""
        return sum(1 for n in self._refs.values() if n)

    def committable(self) -> int | None:
        """The offset to commit: the first one in flight, else one past the last seen."""
        if self._pending:
            return self._pending[0]
        return self.position

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
