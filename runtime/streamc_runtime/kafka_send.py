"""The producing half of the Kafka transport: `KafkaTransport` (`streamc_runtime.kafka`)
inherits `send`, `send_many` (whole batches appended straight to aiokafka's builders) and
`flush` from `_Producing`, with the checks that turn aiokafka's refusals into the runtime's
errors.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast

from aiokafka import errors as kerrors  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from .kafka_settings import (
    _MAX_REQUEST_SIZE,
    _RECORD_OVERHEAD,
    KafkaDeliveryError,
    KafkaRecordTooLargeError,
    KafkaSendError,
    KafkaSettings,
    KafkaTransportError,
    _describe,
)
from .memory import partition_for_key
from .transport import Delivery, Headers

# `send` settles its queue of record futures after this many more sends: often enough to keep
# few resolved futures (and their RecordMetadata) alive, rarely enough to cost nothing.
_SETTLE_EVERY = 256


class _Producing:
    """`KafkaTransport`'s producing methods; the state they use is set up by its
    `__init__`."""

    settings: KafkaSettings
    _producer: Any
    _stopped: bool
    _cluster: Any
    _failed: list[BaseException]
    _unsettled: deque[asyncio.Future[Any]]
    _settle_at: int
    _open_batches: dict[str, dict[int, tuple[Any, asyncio.Future[Any]]]]
    _key_partitions: dict[int, dict[bytes, int]]

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Awaitable[Delivery]:
        producer = self._require(self._producer)
        if partition is None and key is not None and self._cluster is not None:
            # A keyed record's partition, as aiokafka's default partitioner picks it (murmur2
            # of the key over all the topic's partitions), but with the hash cached: keys
            # repeat (after a `group_by` that is the point), and aiokafka's pure-Python murmur2
            # and partition lists cost more per record than the rest of its `send`.
            parts = self._cluster.partitions_for_topic(topic)
            if parts:
                partition = partition_for_key(key, len(parts))
        try:
            sent: asyncio.Future[Any] = await producer.send(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=timestamp if timestamp is None or timestamp >= 0 else None,
                headers=list(headers) if headers else None,
            )
        except kerrors.KafkaError as exc:
            raise _send_error(exc, producer) from exc
        # aiokafka's own future is the delivery: it resolves to a RecordMetadata, which has the
        # `Delivery` attributes, and it is a real Future the runtime attaches its callback to.
        # A future and a callback of ours per record cost as much again as aiokafka's send
        # itself. Failures still reach `flush`: `_settle` collects them from these futures.
        unsettled = self._unsettled
        unsettled.append(sent)
        if len(unsettled) >= self._settle_at:
            self._settle()
        return cast("Awaitable[Delivery]", sent)

    def refuse_too_large(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        # Per record on a fused loop's sends: the sum first, as `_refuse_too_large` does it.
        size = (len(key) if key else 0) + (len(value) if value else 0)
        for k, v in headers:
            size += len(k) + (len(v) if v is not None else 0)  # as in `_refuse_too_large`
        if size > self.settings.max_request_size - _RECORD_OVERHEAD:
            _refuse_too_large(self._require(self._producer), ((key, value, headers),))

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        timestamps: Sequence[int | None] | None = None,
        *,
        partitions: Sequence[int] | None = None,
    ) -> Awaitable[Any]:
        """`_send_many`, with aiokafka's errors told apart as the runtime needs them."""
        try:
            return await self._send_many(topic, records, timestamps, partitions)
        except kerrors.KafkaError as exc:
            raise _send_error(exc, self._producer) from exc

    async def _send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        timestamps: Sequence[int | None] | None,
        targets: Sequence[int] | None = None,
    ) -> Awaitable[Any]:
        """Send `(key, value, headers)` records in order, in whole batches; the awaitable
        resolves once every batch holding one of them is stored. `timestamps`, if given, has
        each record's time (milliseconds; None or negative: now); `targets`, if given, each
        record's partition (a table's changelog: the table partition, whatever the key).

        What `send` costs per record (a coroutine, aiokafka's pure-Python murmur2, a future
        and a `RecordMetadata`) is paid here per batch. Records are partitioned as aiokafka's
        default partitioner does (murmur2 of the key, with the hash cached since keys repeat;
        a random partition for no key) and appended to aiokafka batch builders. A builder
        handed to aiokafka takes more records (the next run's too) for as long as aiokafka
        still queues it, as aiokafka's own `send` appends to a queued batch: the next run fills
        a batch while the previous one is in flight instead of waiting for it. Never after
        aiokafka has taken it for sending: the idempotent producer numbers a batch by its
        record count then, and builds it one loop step later. Order within a partition is
        kept: a partition has one open builder, aiokafka queues a partition's batches in
        order, and a record too large for a batch is sent on its own after the open builder
        is given up.
        """
        producer = self._require(self._producer)
        if not records:
            return _all_of(())
        _refuse_too_large(producer, records)
        partitions = sorted(await producer.partitions_for(topic))
        count = len(partitions)
        # Like aiokafka's default partitioner: a record without a key goes to a partition
        # that has a leader now (any, if none has).
        unkeyed = partitions
        cluster = getattr(getattr(producer, "client", None), "cluster", None)
        if cluster is not None:
            unkeyed = sorted(cluster.available_partitions_for_topic(topic) or partitions)
        opened = self._open_batches.setdefault(topic, {})
        _drop_taken(producer, topic, opened)  # aiokafka may have sent some since the last run
        covering: dict[asyncio.Future[Any], None] = {}  # the batches this run went into
        placed = self._key_partitions.get(count)
        if placed is None or len(placed) >= _KEY_PARTITIONS_MAX:
            placed = self._key_partitions[count] = {}  # many distinct keys: start again
        stamps = itertools.repeat(None) if timestamps is None else timestamps
        chosen: Any = itertools.repeat(None) if targets is None else targets
        last = -1  # the partition whose open batch is in hand (`builder`, `batch`): none yet
        builder: Any = None
        batch: Any = None
        for (key, value, headers), timestamp, target in zip(records, stamps, chosen, strict=False):
            if type(headers) is not list:  # aiokafka's builder takes exactly a list
                # One shared empty list for the common case: the builder only reads it.
                headers = list(headers) if headers else _NO_HEADERS
            # aiokafka's builder stamps None with the current time; it would write a negative
            # time (a consumed record's "no timestamp") as it is.
            ts = timestamp if timestamp is None or timestamp >= 0 else None
            if target is not None:
                partition = target
            elif key is None:
                partition = random.choice(unkeyed)
            else:
                index = placed.get(key)
                if index is None:
                    index = placed[key] = partition_for_key(key, count)
                partition = partitions[index]
            if partition != last:
                # Records of one partition often follow one another (a changelog's run, in
                # stretches per table partition): its open batch is looked up once for them.
                slot = opened.get(partition)
                if slot is not None:
                    builder, batch = slot
                    covering[batch] = None
                    last = partition
            if last == partition:
                # aiokafka's `BatchBuilder.append` inlined (aiokafka is pinned): its wrapper
                # frame and serializer step (the producer has no serializers) cost a third of
                # the record's append. A batch that is full is closed, as `append` does.
                if not builder._closed:
                    if (
                        builder._builder.append(builder._relative_offset, ts, key, value, headers)
                        is not None
                    ):
                        builder._relative_offset += 1
                        continue
                    builder._closed = True
            # No open batch for the partition, or it is full or already drained: a new one.
            # aiokafka's builder takes any record into an empty batch (one larger than the
            # batch size goes alone; larger than a request was refused above).
            builder = producer.create_batch()
            builder.append(timestamp=ts, key=key, value=value, headers=headers)
            # Waits while aiokafka still queues an undrained batch for the partition.
            batch = await producer.send_batch(builder, topic, partition=partition)
            opened[partition] = (builder, batch)
            # While this run waited, aiokafka may have taken any open batch for sending (this
            # one too): the next record looks its partition's batch up again.
            _drop_taken(producer, topic, opened)
            last = -1
            self._unsettled.append(batch)
            covering[batch] = None
        if len(self._unsettled) >= self._settle_at:
            self._settle()
        return _all_of(list(covering))

    def _settle(self) -> None:
        """Move the failures of resolved sends to `_failed` and forget them, oldest first.

        In bulk rather than by a callback per record, and only from the head of the queue, so
        each future is looked at about once: aiokafka resolves records roughly in send order
        (a batch at a time). A future still unresolved at the head keeps the later ones queued
        until it resolves, which every record does within the producer's timeouts. A
        cancelled future is not a failure: aiokafka never cancels them, and `Topic.send`
        gives user code a shield, so only the runtime could, and it does not.
        """
        unsettled = self._unsettled
        failed = self._failed
        while unsettled and unsettled[0].done():
            fut = unsettled.popleft()
            if not fut.cancelled():
                exc = fut.exception()  # also keeps asyncio from logging "never retrieved"
                if exc is not None:
                    failed.append(exc)
        self._settle_at = len(unsettled) + _SETTLE_EVERY

    async def flush(self) -> None:
        """Wait until everything sent so far is stored; raise if any of it failed.

        Failures are raised here even when the sender also awaited the `Delivery`: a commit
        follows every flush, and committing past lost output would break at-least-once.
        """
        if self._producer is None and not self._stopped:
            return  # never started: nothing was sent (a worker stopping after a failed start)
        await self._require(self._producer).flush()
        # Every record sent before the flush is stored or failed now. aiokafka resolves a
        # batch's record futures together with the batch future the flush waited for, but
        # `send_batch` hands out a shield of it, which resolves one callback later.
        late = [fut for fut in self._unsettled if not fut.done()]
        if late:
            await asyncio.wait(late)
        self._settle()
        if self._failed:
            failed, self._failed = self._failed, []
            raise KafkaDeliveryError(
                f"{len(failed)} record(s) could not be produced: {_describe(failed[0])}"
            ) from failed[0]

    # -- helpers -----------------------------------------------------------------------------

    def _require(self, client: Any) -> Any:
        if client is None:
            state = "stopped" if self._stopped else "not started"
            raise KafkaTransportError(f"the Kafka transport is {state}")
        return client


# The most keys `_send_many` remembers the partition of, per partition count.
_KEY_PARTITIONS_MAX = 65536

# What `_send_many` hands aiokafka's builder for a record without headers, rather than a new
# empty list per record (aiokafka's own `append` defaults to one shared list the same way).
_NO_HEADERS: list[tuple[str, bytes]] = []


def _refuse_too_large(
    producer: Any, records: Sequence[tuple[bytes | None, bytes | None, Headers]]
) -> None:
    """Raise `KafkaRecordTooLargeError` naming every record aiokafka's `send` would refuse as
    larger than `max_request_size`, before any of the run is queued (queued, such a record
    would fail its whole batch at the broker, and so the run, and stop the worker).

    The exact size is computed only for records whose key and value come near the limit."""
    limit = getattr(producer, "_max_request_size", _MAX_REQUEST_SIZE)
    near = limit - _RECORD_OVERHEAD
    refused = []
    for i, (key, value, headers) in enumerate(records):
        size = (len(key) if key else 0) + (len(value) if value else 0)
        for k, v in headers:  # a loop, not sum() over a generator: twice as fast per record
            # A consumed header may have no value (None): Kafka allows it, and so the builder.
            size += len(k) + (len(v) if v is not None else 0)
        if size > near:
            exact = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
            if exact > limit:
                refused.append(i)
    if refused:
        raise KafkaRecordTooLargeError(
            f"{len(refused)} record(s) larger than max_request_size ({limit} bytes)",
            refused,
            limit,
        )


def _send_error(exc: Exception, producer: Any) -> Exception:
    """What the runtime is to make of aiokafka's refusal to queue a record: too large (a data
    error, dead-lettered), transient (retried), or as it is (the worker stops)."""
    if isinstance(exc, kerrors.MessageSizeTooLargeError):
        limit = getattr(producer, "_max_request_size", _MAX_REQUEST_SIZE)
        return KafkaRecordTooLargeError(_describe(exc), (0,), limit)
    if getattr(exc, "retriable", False) or isinstance(exc, kerrors.KafkaTimeoutError):
        return KafkaSendError(_describe(exc))
    return exc


def _drop_taken(producer: Any, topic: str, opened: dict[int, tuple[Any, Any]]) -> None:
    """Forget the open builders of `topic` that aiokafka no longer queues (it has taken them
    for sending, or failed them): a builder may take records only while it is the last batch
    aiokafka queues for its partition, which is when aiokafka's own `send` appends to it.

    aiokafka has no public way to tell, so this reads its accumulator (aiokafka is pinned
    exactly, and tests/kafka/test_delivery.py runs this against aiokafka's own accumulator);
    should that ever be missing, no builder is reused, which is slower but still correct."""
    if not opened:
        return
    queued = getattr(getattr(producer, "_message_accumulator", None), "_batches", None)
    if not isinstance(queued, Mapping):
        opened.clear()
        return
    for partition, (builder, _batch) in list(opened.items()):
        batches = queued.get(TopicPartition(topic, partition))
        if not batches or getattr(batches[-1], "_builder", None) is not builder:
            del opened[partition]


def _all_of(futures: Sequence[asyncio.Future[Any]]) -> Awaitable[Any]:
    """One awaitable for several deliveries: done (or failed) when all of them are."""
    if len(futures) == 1:
        return futures[0]
    return asyncio.gather(*futures)  # with none, a future already done
