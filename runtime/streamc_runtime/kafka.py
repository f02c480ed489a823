"""The aiokafka transport: a worker's consumer (in the app's group) and producer on real Kafka.

Imported only for `kafka://` brokers, through `KafkaTransport.from_url`. It implements
`streamc_runtime.transport.Transport`; the runtime above it owns offsets, acks and commits, this
module only moves raw records and keeps the broker-facing promises:

- one `AIOKafkaConsumer` in the group, auto-commit off: only the runtime decides what is done;
- one `AIOKafkaProducer` with acks=all; `commit` flushes it first, so an offset is never
  committed ahead of output that might still be lost;
- topics the app declares (repartition and dead-letter included) are created when missing;
- an unreachable broker at start is retried with bounded exponential backoff, then reported in
  one clear message instead of a traceback from deep inside aiokafka.

Settings and errors: `streamc_runtime.kafka_settings`; producing: `streamc_runtime.kafka_send`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import (
    Collection,
    Coroutine,
    Mapping,
    Sequence,
)
from typing import Any, cast

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka import errors as kerrors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
    RangePartitionAssignor,
)
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from .kafka_read import _Reading, _stop_uncancelled
from .kafka_records import check_inlined_append, lean_consumer_class
from .kafka_send import _SETTLE_EVERY, _Producing
from .kafka_settings import (
    ENV_PREFIX,
    KafkaCommitRefusedError,
    KafkaConfigError,
    KafkaDeliveryError,
    KafkaRecordTooLargeError,
    KafkaSendError,
    KafkaSettings,
    KafkaTransportError,
    KafkaUnavailableError,
    _describe,
    _fatal_start_error,
    parse_kafka_url,
)
from .transport import (
    HANDOUT_RUN,
    TP,
    Message,
    RebalanceListener,
    TopicSpec,
)

# How the group's partitions are spread over the workers. A join with a co-partitioned table,
# and an aggregate over `a & b`, need partition q of every input topic on one worker (the
# table's partition q is restored where the stream's partition q is read). The range assignor
# lays out each topic's partitions over the same sorted members, so topics with equal counts
# get equal ranges; aiokafka's default, round-robin, deals all topics' partitions out in one
# sequence and splits them. The memory broker assigns by range too.
ASSIGNORS = (RangePartitionAssignor,)

__all__ = [
    "ASSIGNORS",
    "KafkaConfigError",
    "KafkaDeliveryError",
    "KafkaRecordTooLargeError",
    "KafkaSendError",
    "KafkaSettings",
    "KafkaTransport",
    "KafkaTransportError",
    "KafkaUnavailableError",
    "parse_kafka_url",
]

log = logging.getLogger("streamc_runtime.kafka")
# Kafka's error code for CreateTopics on a name that exists: someone (maybe another worker
# starting at the same moment) created it first, which is what we wanted.
_TOPIC_ALREADY_EXISTS = 36

# What the coordinator answers while the group is rebalancing or has moved on without us.
_COMMIT_REFUSALS = (
    kerrors.CommitFailedError,
    kerrors.RebalanceInProgressError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
)


class _RebalanceBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    """Translates aiokafka's rebalance callbacks to the runtime's `RebalanceListener`.

    aiokafka awaits these inside its group coordinator and only logs what they raise; a runtime
    failure there is kept and raised from the next `fetch`, so it cannot vanish.
    """

    def __init__(self, transport: KafkaTransport, listener: RebalanceListener) -> None:
        self._transport = transport
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
        tps = frozenset(TP(tp.topic, tp.partition) for tp in revoked)
        # Stop handing out their messages first: the runtime is about to settle them. Those
        # fetched and not handed out are dropped, so a partition assigned back later starts
        # again from its committed offset, not from these.
        transport = self._transport
        transport._ready = transport._ready - tps
        for tp in revoked:
            transport._fetched.pop(tp, None)
        meanwhile = transport._revoked_meanwhile
        if meanwhile is not None:
            meanwhile.update(tps)
        if not tps:
            return
        log.info("partitions revoked: %s", _format_tps(tps))
        try:
            await self._listener.on_partitions_revoked(tps)
        except Exception as exc:
            log.exception("rebalance listener failed while partitions were revoked")
            self._transport._listener_error = exc

    async def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
        tps = frozenset(TP(tp.topic, tp.partition) for tp in assigned)
        log.info("assigned partitions: %s", _format_tps(tps))
        try:
            await self._listener.on_partitions_assigned(tps)
        except Exception as exc:
            log.exception("rebalance listener failed while partitions were assigned")
            self._transport._listener_error = exc
        # Only now may `fetch` return their messages (the protocol's promise).
        self._transport._ready = tps


class KafkaTransport(_Producing, _Reading):
    """`Transport` on Kafka through aiokafka: one consumer in the group, one producer.

    Graceful shutdown is the runtime's job: it commits what is done, then calls `stop`, which
    flushes the producer and leaves the group (aiokafka does not call the revoke listener then).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer: Any = None
        self._producer: Any = None
        self._admin: Any = None
        self._started = False
        self._stopped = False
        # Partitions whose assignment the runtime has been told about; `fetch` returns only
        # their messages.
        self._ready: frozenset[TP] = frozenset()
        self._listener_error: BaseException | None = None
        # Records whose delivery failed since the last flush (see `flush`).
        self._failed: list[BaseException] = []
        # aiokafka's futures of the records sent, in send order, not yet looked at by
        # `_settle` (which moves their failures to `_failed`), and the length at which `send`
        # settles them.
        self._unsettled: deque[asyncio.Future[Any]] = deque()
        self._settle_at = _SETTLE_EVERY
        self._partitions: dict[str, int] = {}
        # Records fetched from aiokafka and not handed to the runtime yet: partition ->
        # [records, index of the first one not handed out] (see `fetch`).
        self._fetched: dict[Any, list[Any]] = {}
        self._idle = True  # the last fetch found nothing (or none happened yet)
        # The last `_take_fetched` stopped where a partition's held records ran out, with
        # others still holding some (see `_hand_out`).
        self._cut_short = False
        # Partitions whose turn the last `_take_fetched` cut short, and what is still theirs.
        self._owed: dict[Any, int] = {}
        # Partitions revoked while `_hand_out` waits for a top-up, with records taken before.
        self._revoked_meanwhile: set[TP] | None = None
        self._resumed: asyncio.Future[Any] | None = None  # see `_getmany_or_resume`
        # topic -> partition -> (builder, its batch future): the batch `send_many` appends to
        # until aiokafka drains it.
        self._open_batches: dict[str, dict[int, tuple[Any, asyncio.Future[Any]]]] = {}
        # partition count -> key -> the index of its partition (`partition_for_key`), for
        # `send_many`: a dict hit is a fifth of the `lru_cache` call per record.
        self._key_partitions: dict[int, dict[bytes, int]] = {}
        self._assignment_raw: Any = None
        self._assignment: frozenset[TP] = frozenset()
        # The producer's metadata cache (aiokafka's ClusterMetadata), for `send`'s partitioning.
        self._cluster: Any = None

    @classmethod
    def from_url(cls, url: str, *, group_id: str, **overrides: Any) -> KafkaTransport:
        """A transport for `kafka://host:port[,host:port...]`; settings from the environment
        (`STREAMC_KAFKA_*`, see `streamc_runtime.kafka_settings`) and then `overrides`."""
        return cls(KafkaSettings.from_env(parse_kafka_url(url), group_id, **overrides))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, retrying with exponential backoff while the brokers are unreachable."""
        if self._started:
            return
        if self._stopped:
            raise KafkaTransportError("a stopped KafkaTransport cannot be started again")
        # Before connecting: an aiokafka the lean fetch or the inlined batch append (see
        # `_send_many`) does not fit is no reason to retry.
        lean_consumer_class()
        check_inlined_append()
        s = self.settings
        servers = ",".join(s.bootstrap_servers)
        delay = s.connect_backoff_s
        began = time.monotonic()
        for attempt in range(1, s.connect_attempts + 1):
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
                # arrives as _open completes, and a SIGTERM during start-up must not be lost.
                async with asyncio.timeout(s.connect_timeout_s):
                    await self._open()
            except asyncio.CancelledError:
                await self._close_clients()
                raise
            except Exception as exc:
                await self._close_clients()
                fatal = _fatal_start_error(exc, s)
                if fatal is not None:
                    raise KafkaUnavailableError(f"Kafka at {servers}: {fatal}") from exc
                reason = _describe(exc)
                if attempt == s.connect_attempts:
                    raise KafkaUnavailableError(
                        f"cannot reach Kafka at {servers} after {attempt} attempt(s) over "
                        f"{time.monotonic() - began:.1f}s: {reason}. Check the --broker URL "
                        f"(or STREAMC_BROKER), that the brokers are up and reachable from here, "
                        f"and the {ENV_PREFIX}SECURITY_PROTOCOL/SASL/SSL settings."
                    ) from exc
                # Jitter so a fleet of workers restarting together does not retry in lockstep.
                pause = delay * random.uniform(0.8, 1.2)
                log.warning(
                    "Kafka at %s not reachable (attempt %d/%d): %s; retrying in %.1fs",
                    servers,
                    attempt,
                    s.connect_attempts,
                    reason,
                    pause,
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, s.connect_backoff_max_s)
            else:
                self._started = True
                log.info("connected to Kafka at %s as group %r", servers, s.group_id)
                return

    async def _open(self) -> None:
        s = self.settings
        common = s.client_kwargs()
        self._producer = AIOKafkaProducer(
            **common,
            acks="all",
            enable_idempotence=s.enable_idempotence,
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_size,
            max_request_size=s.max_request_size,
            compression_type=s.compression_type,
        )
        # Unpacks fetched records into lean `KafkaRecord`s (kafka_records.py).
        self._consumer = lean_consumer_class()(
            **common,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            partition_assignment_strategy=ASSIGNORS,
        )
        self._admin = AIOKafkaAdminClient(**common)
        self._cluster = self._producer.client.cluster
        # Connected together: each start is a few round trips, and start-up time is spent
        # before the group join can even begin.
        started = await asyncio.gather(
            self._producer.start(),
            self._consumer.start(),
            self._admin.start(),
            return_exceptions=True,
        )
        # The producer's failure first: it is what the idempotence check (InitProducerId)
        # fails on, which `_fatal_start_error` explains.
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _close_clients(self) -> None:
        """Close whatever `_open` managed to start; raises nothing but a cancellation (used on
        failure paths), one aiokafka's stops swallowed too, once every client is closed: a
        SIGTERM landing while a failed attempt is cleaned up must end the start, not let it
        retry for minutes."""
        await _stop_uncancelled(self._close_each())

    async def _close_each(self) -> None:
        cancelled: asyncio.CancelledError | None = None
        for name in ("_consumer", "_admin", "_producer"):
            client = getattr(self, name)
            setattr(self, name, None)
            if client is None:
                continue
            try:
                await (client.close() if name == "_admin" else client.stop())
            except asyncio.CancelledError as exc:
                # Raised once the others are closed too: nobody closes them after a
                # cancelled start (the stop may already have run).
                cancelled = exc
            except Exception:
                log.debug("error closing the Kafka %s", name.strip("_"), exc_info=True)
        if cancelled is not None:
            raise cancelled

    async def stop(self) -> None:
        """Flush the producer, leave the group, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            await self._close_clients()
            return
        try:
            if self._producer is not None:
                await self._producer.flush()
                self._settle()  # retrieve failures nobody will raise now, as callbacks did
        finally:
            consumer, admin, producer = self._consumer, self._admin, self._producer
            self._consumer = self._admin = self._producer = None
            self._ready = frozenset()
            self._fetched.clear()
            # Leave the group before closing the producer: nothing produced after this point
            # can be committed anyway, and the group rebalances sooner.
            try:
                if consumer is not None:
                    await _stop_uncancelled(consumer.stop())
            finally:
                try:
                    if admin is not None:
                        await _stop_uncancelled(admin.close())
                finally:
                    if producer is not None:
                        await _stop_uncancelled(producer.stop())

    # -- topics ------------------------------------------------------------------------------

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the missing topics with their declared partitions and config.

        Existing topics are left as they are (a differing partition count is only logged:
        changing it would move keys between partitions). A concurrent creator is fine.
        """
        admin = self._require(self._admin)
        wanted = {spec.name: spec for spec in specs}
        if not wanted:
            return
        existing = await self._describe(list(wanted))
        for name, count in existing.items():
            declared = wanted[name].partitions
            if count != declared:
                log.warning(
                    "topic %r exists with %d partitions, the app declares %d; using it as is",
                    name,
                    count,
                    declared,
                )
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if missing:
            rf = self.settings.replication_factor or min(3, await self._broker_count())
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        rf,
                        topic_configs=dict(spec.config),
                    )
                    for spec in missing
                ],
                timeout_ms=self.settings.request_timeout_ms,
            )
            for topic, code, message in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    err = kerrors.for_code(code)
                    raise KafkaTransportError(
                        f"could not create topic {topic!r}: {err.__name__}"
                        + (f": {message}" if message else "")
                    )
            log.info("created topics %s", ", ".join(spec.name for spec in missing))
            # Creation propagates to every broker's metadata asynchronously on real Kafka;
            # wait until it is visible so the first produce/subscribe sees the partitions.
            await self._await_topics([spec.name for spec in missing])
            existing = await self._describe(list(wanted))
        self._partitions.update(existing)

    async def _describe(self, names: list[str]) -> dict[str, int]:
        """Partition counts of those of `names` that exist (with at least one partition).

        Asks for every topic rather than for `names`: a metadata request naming a missing
        topic auto-creates it, with broker defaults, on clusters that allow auto-creation.
        """
        topics = await self._require(self._admin).describe_topics(None)
        wanted = set(names)
        found: dict[str, int] = {}
        for t in topics:
            if t["topic"] in wanted and t["error_code"] == 0 and t["partitions"]:
                found[t["topic"]] = len(t["partitions"])
        return found

    async def _await_topics(self, names: list[str]) -> None:
        deadline = time.monotonic() + self.settings.request_timeout_ms / 1000
        delay = 0.05
        while True:
            found = await self._describe(names)
            if all(name in found for name in names):
                return
            if time.monotonic() > deadline:
                missing = sorted(set(names) - found.keys())
                raise KafkaTransportError(f"topics not visible after creation: {missing}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _broker_count(self) -> int:
        cluster = await self._require(self._admin).describe_cluster()
        return max(1, len(cluster.get("brokers", ())))

    def partitions_for(self, topic: str) -> int | None:
        """From `ensure_topics`, else from the producer's metadata cache (None if unknown).

        Only caches are read: asking the broker about an unknown topic could auto-create it.
        """
        count = self._partitions.get(topic)
        if count is not None:
            return count
        if self._producer is None:
            return None
        parts = self._producer.client.cluster.partitions_for_topic(topic)
        return len(parts) if parts else None

    # -- consuming ---------------------------------------------------------------------------

    async def subscribe(self, topics: Collection[str], listener: RebalanceListener) -> None:
        consumer = self._require(self._consumer)
        consumer.subscribe(topics=sorted(topics), listener=_RebalanceBridge(self, listener))

    # The protocol's signature: a plain wait bound, handed to aiokafka's own timeout.
    async def fetch(self, timeout: float, max_records: int) -> Sequence[Message]:  # noqa: ASYNC109
        consumer = self._require(self._consumer)
        if self._listener_error is not None:
            err, self._listener_error = self._listener_error, None
            raise KafkaTransportError("the rebalance listener failed") from err
        if self._fetched:
            await self._top_up(consumer, None)
            out = await self._hand_out(consumer, max_records)
            if out:
                return out
        idle = self._idle
        # Everything aiokafka holds, not `max_records` of it: aiokafka asks the broker for more
        # of a partition only once all it fetched of it has been taken, so taking it in pieces
        # left the worker waiting for fetch round trips (measured on a backlog: a tenth slower
        # with ten times `max_records`, a quarter with `max_records`). Except after idling:
        # aiokafka unpacks all it returns first, and a first fetch holds about a megabyte per
        # partition, tens of milliseconds before the first record could be handled. The
        # runtime gets `max_records` at a time either way; the rest waits in `_fetched`.
        timeout_ms = max(0, int(timeout * 1000))
        limit = max_records if idle else None
        paused = consumer.paused()
        if not paused:
            getmany = consumer.getmany(timeout_ms=timeout_ms, max_records=limit)
        else:
            # Only the unpaused partitions: aiokafka drops what it has fetched of a partition
            # that is paused when `getmany` looks at it, and fetches it again only once it is
            # resumed and not paused at the next look, which back-pressure cycles can keep
            # from happening for as long as other partitions have a backlog.
            active = [tp for tp in consumer.assignment() if tp not in paused]
            getmany = (
                consumer.getmany(*active, timeout_ms=timeout_ms, max_records=limit)
                if active
                else _nothing_within(timeout)
            )
        if self._fetched or paused:
            # A resume must end the wait: aiokafka's position is past the records held for a
            # paused partition, and it may have nothing newer to wake for; and the getmany
            # does not cover partitions paused when it began.
            batches = await self._getmany_or_resume(getmany)
            if batches is None:
                return self._take_fetched(consumer, max_records)
        else:
            batches = await getmany
        self._idle = not batches
        if not batches:
            return ()
        self._hold(batches)
        if idle:
            # aiokafka filled `max_records` from the partitions it holds first: the others get
            # a run each now, so the first hand-out after idling is interleaved too.
            await self._top_up(consumer, HANDOUT_RUN)
            return self._take_fetched(consumer, max_records)
        return await self._hand_out(consumer, max_records)

    async def _hand_out(self, consumer: Any, max_records: int) -> list[Message]:
        """`_take_fetched`, going on when it stopped because a partition's held records ran
        out while others still had some: what aiokafka already holds of that partition is
        added in its place in the turns, and the turns go on up to `max_records`. Stopping
        there instead split most fetches into two hand-outs a dispatch apart: the records
        after the cut waited for the agents to handle those before it, and for another pass
        of the fetch loop, before they were even dispatched. Skipped after idling, where
        aiokafka's megabyte per partition is not to be unpacked before the first records go
        out (see `fetch`)."""
        out = self._take_fetched(consumer, max_records)
        while self._cut_short and len(out) < max_records:
            revoked: set[TP] = set()
            self._revoked_meanwhile = revoked
            try:
                await self._top_up(consumer, None)
            finally:
                self._revoked_meanwhile = None
            if revoked:
                # aiokafka's getmany first waits out a rebalance under way, listeners and all:
                # what was taken of a partition revoked meanwhile is no longer ours to hand
                # out (its next owner, or this worker assigned it back, reads it again from
                # the commit), as what was still held of it was dropped.
                out = [m for m in out if TP(m.topic, m.partition) not in revoked]
            more = self._take_fetched(consumer, max_records - len(out))
            if not more:
                break
            out += more
        return out

    async def _top_up(self, consumer: Any, run: int | None) -> None:
        """Add what aiokafka has already fetched of the ready, unpaused partitions that have
        no records held, without waiting for more: while other partitions' held records are
        handed out, one whose records ran out would otherwise wait for all of theirs. All it
        holds of them (`run` None), or up to `run` records of each."""
        fetched = self._fetched
        ready = self._ready
        paused = consumer.paused()
        # Partitions with nothing held, or whose held records ran out at a cut (see
        # `_take_fetched`): those are topped up in their place in the turns.
        missing = []
        for tp in consumer.assignment():
            if tp in ready and tp not in paused:
                held = fetched.get(tp)
                if held is None or held[1] >= len(held[0]):
                    missing.append(tp)
        if not missing:
            return
        if run is None:
            self._hold(await consumer.getmany(*missing, timeout_ms=0))
            return
        # One call each: aiokafka fills `max_records` from one partition before the next.
        for tp in missing:
            self._hold(await consumer.getmany(tp, timeout_ms=0, max_records=run))

    def _hold(self, batches: Mapping[Any, list[Any]]) -> None:
        """Keep what `getmany` returned in `_fetched`, behind what is still held."""
        ready = self._ready
        fetched = self._fetched
        for tp, records in batches.items():
            if tp not in ready:  # TopicPartition and TP are equal tuples
                # Fetched between aiokafka's assignment and the runtime hearing of it (or
                # after a revoke began): rewind so they are fetched again, never skipped.
                self._rewind(tp, records[0].offset)
                continue
            # The consumer's `KafkaRecord`s pass through as they are: they are built for the
            # `Message` protocol in the first place (kafka_records.py).
            held = fetched.get(tp)
            if held is None:
                fetched[tp] = [records, 0]
            else:  # resumed while aiokafka fetched: behind what was still held, in order
                held[0] = held[0][held[1] :] + records
                held[1] = 0

    async def _getmany_or_resume(
        self, getmany: Coroutine[Any, Any, dict[Any, list[Any]]]
    ) -> dict[Any, list[Any]] | None:
        """What `getmany` returns, or None if a partition is resumed first (the getmany is
        then cancelled, before it took anything)."""
        resumed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._resumed = resumed
        task: asyncio.Future[Any] = asyncio.ensure_future(getmany)
        try:
            await asyncio.wait({task, resumed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._resumed = None
            if not task.done():
                task.cancel()
                # Wait for it to end, but stay cancellable ourselves (a stop cancels fetch).
                await asyncio.wait({task})
        if task.cancelled():
            return None
        return cast("dict[Any, list[Any]]", task.result())

    def _take_fetched(self, consumer: Any, max_records: int) -> list[Message]:
        """Up to `max_records` of the fetched records not handed out yet, skipping paused
        partitions (theirs wait for the resume, as aiokafka's would) and dropping those of
        partitions no longer assigned (their next owner reads them from the committed offset).

        Partitions take turns, `HANDOUT_RUN` records at a time, in offset order per
        partition; a partition that had its turn moves to the back of `_fetched`, so the next
        call goes on with the partition after it. When one runs out of held records while
        others still have some, this call ends with that turn (`_cut_short`) and the partition
        keeps its place, so it falls no more than a run behind before `_top_up` (which
        `_hand_out` then does at once) refills it there. What a turn cut short (by the held
        records running out, or by `max_records`) did not give is the partition's still
        (`_owed`), and the next call gives it first: each such cut, at every fetch's end and
        wherever aiokafka's fetch of a partition ends, otherwise left that partition behind
        by what it did not get, and the skew grew with the backlog.
        With a slow agent, every partition with a backlog then progresses at the same pace
        instead of one fetch (a megabyte) at a time.
        """
        fetched = self._fetched
        out: list[Message] = []
        self._cut_short = False
        owed, self._owed = self._owed, {}
        if not fetched:
            return out
        paused = consumer.paused()
        ready = self._ready
        turn = []
        for tp, held in list(fetched.items()):
            if tp not in ready or held[1] >= len(held[0]):
                del fetched[tp]  # revoked, or ran out at a cut and nothing came to top it up
            elif tp not in paused:
                turn.append(tp)
        if owed and len(turn) > 1:
            for tp in turn:  # the rest of their last turns, before anyone's next one
                n = owed.get(tp)
                if n is not None:
                    held = fetched[tp]
                    records, start = held
                    end = min(start + min(n, max_records - len(out)), len(records))
                    out.extend(records[start:end])
                    held[1] = end
                    if end - start < n:
                        self._owed[tp] = n - (end - start)
                    if len(out) >= max_records:
                        return out
        while turn:
            run = HANDOUT_RUN if len(turn) > 1 else max_records
            left: list[Any] = []
            ran_out: list[Any] = []
            for tp in turn:
                held = fetched.pop(tp)
                records, start = held
                end = min(start + min(run, max_records - len(out)), len(records))
                out.extend(records[start:end])
                if end - start < run and len(turn) > 1:
                    # At most a run: a partition with less than a run held at each turn
                    # (no backlog) must not gather a burst for later.
                    self._owed[tp] = min(self._owed.get(tp, 0) + run - (end - start), run)
                held[1] = end
                fetched[tp] = held  # to the back
                (left if end < len(records) else ran_out).append(tp)
                if len(out) >= max_records:
                    break
            if ran_out and left and len(out) < max_records:
                # A partition's held records ran out: it keeps its place in the turns, empty,
                # and is topped up there from what aiokafka holds before the others get
                # another turn (`_hand_out`, or the next `fetch`).
                self._cut_short = True
                return out
            for tp in ran_out:
                if left and tp in self._owed:
                    continue  # cut short by `max_records` too: topped up in its place
                self._owed.pop(tp, None)  # nothing held anywhere: no backlog to be fair over
                del fetched[tp]
            if ran_out or len(out) >= max_records:
                return out
            turn = left
        return out

    def _rewind(self, tp: Any, offset: int) -> None:
        consumer = self._consumer
        if tp in consumer.assignment():
            consumer.seek(tp, offset)

    def assignment(self) -> frozenset[TP]:
        if self._consumer is None:
            return frozenset()
        raw = self._consumer.assignment()
        # aiokafka returns the same frozenset until the assignment changes: convert once.
        if raw is not self._assignment_raw:
            self._assignment_raw = raw
            self._assignment = frozenset(TP(tp.topic, tp.partition) for tp in raw)
        return self._assignment

    def pause(self, partitions: Collection[TP]) -> None:
        consumer = self._require(self._consumer)
        assigned = consumer.assignment()
        # A partition may have been revoked since the runtime decided to pause it; aiokafka
        # raises on unassigned ones, and a revoked partition needs no pausing.
        consumer.pause(*[TopicPartition(*tp) for tp in partitions if tp in assigned])

    def resume(self, partitions: Collection[TP]) -> None:
        consumer = self._require(self._consumer)
        assigned = consumer.assignment()
        consumer.resume(*[TopicPartition(*tp) for tp in partitions if tp in assigned])
        resumed = self._resumed
        if resumed is not None and not resumed.done():
            resumed.set_result(None)  # a fetch waits without these (see `fetch`)

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Flush the producer, then commit. Raises `KafkaDeliveryError` instead of committing
        if output since the last flush was lost, and `KafkaCommitRefusedError` if the group is
        rebalancing or has rebalanced in the meantime."""
        if not offsets and self._consumer is None and not self._stopped:
            return  # never started: nothing to commit
        consumer = self._require(self._consumer)
        await self.flush()
        if not offsets:
            return
        assigned = consumer.assignment()
        payload = {
            TopicPartition(tp.topic, tp.partition): offset
            for tp, offset in offsets.items()
            if tp in assigned
        }
        if len(payload) != len(offsets):
            # Another member owns them now; committing would move its position.
            gone = sorted(tp for tp in offsets if tp not in assigned)
            log.warning("not committing offsets of partitions no longer assigned: %s", gone)
        if payload:
            try:
                await consumer.commit(payload)
            except _COMMIT_REFUSALS as exc:
                raise KafkaCommitRefusedError(f"commit refused: {_describe(exc)}") from exc

    async def committed(self, partition: TP) -> int | None:
        consumer = self._require(self._consumer)
        offset = await consumer.committed(TopicPartition(partition.topic, partition.partition))
        return cast("int | None", offset)

    def highwater(self, partition: TP) -> int | None:
        """The partition's high watermark from the latest fetch response (None before one,
        or if not assigned): where the consumer lag is measured to, as `end_offsets()` is
        wrong on Tansu (tansu.md) and would cost a request per scrape anyway."""
        consumer = self._consumer
        if consumer is None:
            return None
        tp = TopicPartition(partition.topic, partition.partition)
        if tp not in consumer.assignment():
            return None
        return cast("int | None", consumer.highwater(tp))


async def _nothing_within(timeout: float) -> dict[Any, list[Any]]:  # noqa: ASYNC109
    """What `getmany` returns when every assigned partition is paused: nothing, after the wait
    (which a resume ends early, see `KafkaTransport._getmany_or_resume`)."""
    await asyncio.sleep(timeout)
    return {}


def _format_tps(tps: Collection[TP]) -> str:
    """`orders[0,2] totals[1]`: short enough for one log line, greppable by tests."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    parts = [f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())]
    return " ".join(parts) or "(none)"
