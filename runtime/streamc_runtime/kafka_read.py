"""The group-less reading half of the Kafka transport: `KafkaTransport`
(`streamc_runtime.kafka`) inherits `follow` (a global table's reader for its life) and
`read_partition` (a changelog restore) from `_Reading`. Each reads with a consumer of its own
outside the group: assign and seek, nothing committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence

from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from .kafka_records import lean_consumer_class, set_fetch_max_wait
from .kafka_settings import KafkaSettings, KafkaTransportError
from .transport import Message

_RESTORE_POLL_MS = 20  # how soon a changelog restore sees it has caught up
_FOLLOW_WAIT_MS = 1000  # a follower's `getmany` wait once caught up (records end it early)


class _Reading:
    """`KafkaTransport`'s group-less readers; the state they use is set up by its
    `__init__`."""

    settings: KafkaSettings
    _partitions: dict[str, int]
    _describe: Callable[[list[str]], Awaitable[dict[str, int]]]  # partition counts

    async def read_partition(
        self, topic: str, partition: int, start: int
    ) -> AsyncGenerator[Sequence[Message], None]:
        """One partition from `start` to its end: `follow` of that partition until it says it
        is caught up. The end is the high watermark of the fetches, not `end_offsets()` (wrong
        on Tansu: tansu.md); a partition written meanwhile is read to the watermark of the
        latest fetch. A partition the topic does not have is an error: a consumer assigned to
        it would wait for it for ever."""
        async with contextlib.aclosing(self.follow(topic, {partition: start})) as batches:
            async for batch in batches:
                if not batch:
                    return
                yield batch

    async def follow(
        self, topic: str, starts: Mapping[int, int]
    ) -> AsyncGenerator[Sequence[Message], None]:
        """The partitions in `starts` from their offsets on, by ONE consumer outside the group
        (assign and seek, nothing committed) kept for as long as the caller iterates: a record
        is handed out as soon as a fetch brings it, with no consumer started per look. Caught
        up, as `read_partition` decides it, when every partition's position reached the high
        watermark of its latest fetch (not `end_offsets()`: tansu.md)."""
        count = self._partitions.get(topic)
        if count is None or max(starts, default=0) >= count:
            count = (await self._describe([topic])).get(topic)
        missing = sorted(p for p in starts if count is None or p >= count)
        if missing:
            raise KafkaTransportError(
                f"topic {topic!r} has no partition {missing[0]} (it has {count or 0})"
            )
        tps = [TopicPartition(topic, p) for p in sorted(starts)]
        consumer = lean_consumer_class()(
            **self.settings.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a start compacted or deleted away: from the first
            # Until caught up, `read_partition`'s short wait: a broker with nothing to read
            # for us (an empty topic) holds a fetch to its end, and the first read would take
            # the whole `fetch_max_wait_ms` (500 ms by default) before the table is ready.
            fetch_max_wait_ms=min(self.settings.fetch_max_wait_ms, _RESTORE_POLL_MS),
            max_partition_fetch_bytes=self.settings.max_partition_fetch_bytes,
            fetch_max_bytes=self.settings.fetch_max_bytes,
        )
        try:
            await consumer.start()  # (cancelled in here, it must still be stopped)
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, starts[tp.partition])
            caught_up = not tps
            if caught_up:
                yield ()
            while True:
                # aiokafka wakes `getmany` for records only; until caught up, a short wait lets
                # the loop see the watermarks of fetches that brought none.
                batches = await consumer.getmany(
                    *tps, timeout_ms=_RESTORE_POLL_MS if not caught_up else _FOLLOW_WAIT_MS
                )
                for tp in tps:
                    records = batches.get(tp)
                    if records:
                        yield records
                if not caught_up:
                    for tp in tps:
                        highwater = consumer.highwater(tp)
                        if highwater is None or await consumer.position(tp) < highwater:
                            break
                    else:
                        caught_up = True
                        # From here the group consumer's wait: Kafka answers a held fetch as
                        # soon as a record arrives, so it costs an update no latency (Tansu
                        # holds it to the end, as for stream records); idle, it is one fetch
                        # per wait (the catch-up's 20 ms would be 50 a second for ever).
                        set_fetch_max_wait(consumer, self.settings.fetch_max_wait_ms)
                        yield ()
        finally:
            await _stop_uncancelled(consumer.stop())


async def _stop_uncancelled(stop: Awaitable[object]) -> None:
    """A client's `stop()` (or `close()`), raising a cancellation of ours requested meanwhile.
    aiokafka's stops await their own cancelled tasks inside `suppress(CancelledError)`, which
    also swallows a cancel of the task calling them: a reader closing its consumer at the
    partition's end (a global table's follower did, several times a second, before it had
    `follow`) went on as if never cancelled, and whoever waited for it to end waited for ever."""
    task = asyncio.current_task()
    asked = 0 if task is None else task.cancelling()
    await stop
    if task is not None and task.cancelling() > asked:
        raise asyncio.CancelledError
