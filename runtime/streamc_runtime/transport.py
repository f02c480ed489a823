"""The seam between the runtime and a broker: raw messages in, raw messages out.

The runtime (Conductor, streams, offset tracking) speaks only this protocol. Two transports
implement it: the in-process memory broker (`streamc_runtime.memory`) for unit tests and
`streamc run`, and aiokafka (`streamc_runtime.kafka`) for real clusters. Keeping the seam at
raw bytes means codecs, acks and commits are the same code on both.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class TransportError(Exception):
    """An error a transport raises on purpose, whose message is meant for the user (a broker
    that cannot be reached, a setting that cannot work, a commit the group refused)."""


Headers = Sequence[tuple[str, bytes]]

# Records `fetch` hands out from one partition before turning to the next partition that has
# some: while several partitions have a backlog, none gets ahead of another by more than this.
# Runs (list slices), not single records, keep the per-record cost of interleaving nil.
HANDOUT_RUN = 50


class RecordTooLargeError(TransportError):
    """`send_many` refused some records of a run (or `send` its record), before sending any of
    it, because the transport can never send them; `indexes` are their positions in the run
    and `limit` the largest record the transport sends, in its own measure (None: unknown).

    A data error: the record goes to the dead-letter topic, truncated if need be."""

    def __init__(self, message: str, indexes: Sequence[int], limit: int | None = None) -> None:
        super().__init__(message)
        self.indexes = tuple(indexes)
        self.limit = limit


class TransientTransportError(TransportError):
    """A send failed for a reason that may pass (a timeout, a partition without a leader, a
    lost connection): worth retrying, and never a reason to dead-letter a message."""


class DeliveryError(TransportError):
    """Records sent earlier were not stored (raised by `flush`, and so by `commit`): committing
    anything from then on could pass a message whose output is lost."""


def redact_url(url: str) -> str:
    """`url` fit for a message or a log line: whatever stands between the scheme and the last
    `@` (a user and password) is replaced by `***`."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)?.*@", r"\1***@", url, flags=re.DOTALL)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed send is worth retrying: a transport error that may pass, or a plain
    connection error or timeout (which a transport may let through as they are)."""
    return isinstance(exc, TransientTransportError | ConnectionError | TimeoutError)


class TP(NamedTuple):
    """A topic partition, by its real (Kafka) topic name."""

    topic: str
    partition: int


class Message(Protocol):
    """One consumed record, exactly as the broker gave it: the attributes the runtime reads.

    A structural type, so a transport hands over the record objects it makes as it unpacks a
    fetch instead of copying each one (a copy per message was a measurable share of the hot
    path): the Kafka transport's consumer unpacks straight into `KafkaRecord`s
    (`kafka_records.py`), and the memory broker stores its own `MemoryMessage`. Read-only for
    the runtime: it never changes a message it was given.
    """

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class TopicSpec:
    name: str  # real topic name
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


class Delivery(Protocol):
    """Where a produced record landed, once the broker has it durably.

    Structural, like `Message`: a transport may resolve sends with its client's own result
    (aiokafka's `RecordMetadata` has these attributes); the memory broker has `MemoryDelivery`.
    """

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class RebalanceListener(Protocol):
    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        """Called before the partitions go: finish or abandon work on them, then commit."""

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        """Called once the new assignment is known, before messages from it are fetched."""


class Transport(Protocol):
    """A consumer in one group plus a producer, both owned by one worker.

    `start`/`stop` are idempotent. `send` returns once the record is queued; the awaitable it
    returns resolves to a `Delivery` when the record is durably stored (acks=all on Kafka) or
    raises. It may be the client's own future (no wrapper per record on the hot path), so a
    caller must not cancel it: `Topic.send` hands user code a shield instead. Whatever the
    callers do with it, `flush` raises if a record sent before it was not stored.

    `send` and `send_many` raise `RecordTooLargeError` for a record the transport can never
    send (a data error), `TransientTransportError` (or a `ConnectionError`/`TimeoutError`) for
    one that may go through later, and anything else for a failure retrying cannot fix.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""

    async def subscribe(self, topics: Collection[str], listener: RebalanceListener) -> None: ...

    async def fetch(self, timeout: float, max_records: int) -> Sequence[Message]:  # noqa: ASYNC109
        """Up to `max_records` messages from unpaused assigned partitions, waiting at most
        `timeout` seconds for the first one. Order within a partition is offset order;
        partitions with messages waiting take turns in runs of at most `HANDOUT_RUN`, each
        fetch starting with the partition after the one the last fetch ended with.

        The messages may be the client's own objects (any type with `Message`'s attributes);
        the runtime keeps them while their events are in flight and never mutates them."""

    def assignment(self) -> frozenset[TP]: ...

    def pause(self, partitions: Collection[TP]) -> None: ...

    def resume(self, partitions: Collection[TP]) -> None: ...

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit, per partition, the offset of the next message to read."""

    async def committed(self, partition: TP) -> int | None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Awaitable[Delivery]:
        """`timestamp`: the record's time in milliseconds since the epoch; None (or a
        negative one) lets the producer stamp it with the current time."""

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        timestamps: Sequence[int | None] | None = None,
        *,
        partitions: Sequence[int] | None = None,
    ) -> Awaitable[object]:
        """Send `(key, value, headers)` records, in order, each to the partition its key
        maps to (or to `partitions[i]`, if given); returns once all are queued. `timestamps`,
        if given, has one per record, as for `send`. The awaitable resolves when every one of
        them is durably stored, or raises if any was not. Records the transport can never send (too
        large) make it raise `RecordTooLargeError` before anything is sent. The forwarding of
        `group_by` and `through`
        sends whole runs this way: a transport can batch them (Kafka: one produce batch per
        partition) instead of paying for a send per record."""

    async def flush(self) -> None:
        """Wait until every record sent so far is durably stored; raise `DeliveryError` if one
        of them was not."""

    def refuse_too_large(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Raise `RecordTooLargeError` (index 0) if `send` would refuse this record as too
        large: a fused loop checks each record as it is made, so the element stops there, as
        it would at a `send`, rather than after its later steps have run."""

    def partitions_for(self, topic: str) -> int | None:
        """The topic's partition count, if known."""

    def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncGenerator[Sequence[Message], None]:
        """The records of one partition from offset `start` (or the first one retained after
        it) to its end as of the reading, in batches; outside the consumer group (a table's
        changelog restore). The end is the high watermark a fetch reports."""

    def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[Message], None]:
        """The records of the partitions in `starts` (partition -> first offset), outside the
        consumer group, in batches of one partition each, as they arrive, for as long as the
        caller iterates (a global table). One reader for the follower's life: it waits for
        new records rather than being reopened to look for them. One empty batch marks the
        first time every partition has been read to its end (as `read_partition` decides it):
        the records before it are what the topic held when the follow started. Close it
        (`aclose`) when done: it holds a consumer."""
