"""`Worker`: one running instance of an `App` on one transport.

Each run of an app is a `Worker` owning one transport (one consumer in the app's group plus a
producer), the Conductor, the offset tracker and every task. The worker lifecycle:

    start:  transport.start -> ensure_topics -> agents build their streams -> subscribe ->
            ensure the dead-letter topic -> fetch loop, commit loop, stats loop
    stop:   stop fetching -> close streams and let agents finish the element in hand (bounded,
            then cancelled; unfinished work stays uncommitted) -> flush the producer -> close
            the table stores -> commit -> transport.stop; each step given `shutdown_timeout`,
            a stuck one logged and left behind (see `_bounded`)

Both are idempotent. A background task that fails is logged and stops the worker (exit status
1) rather than leaving it stalled; `CancelledError` is always re-raised.

The dead-letter record is built and sent in `deadletter.py`; the commit loop and the stats
line run from `periodic.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from .app import Agent, App
from .conductor import Conductor
from .deadletter import send_dead
from .events import (
    Carrier,
    Event,
    Members,
    ack_carrier,
    carrier_events,
    forwarded_key_headers,
    forwarded_timestamp,
    positioned,
)
from .gcpolicy import acquire as acquire_gc_policy
from .gcpolicy import release as release_gc_policy
from .latency import Latency
from .logs import AGENT
from .offsets import OffsetTracker, PartitionOffsets
from .periodic import commit_loop, stats_loop
from .records import DecodeError
from .source import SourceStream
from .state.table import WorkerTables
from .tasks import awaiting, cancel
from .topic import Topic
from .transport import (
    TP,
    Delivery,
    DeliveryError,
    Headers,
    Message,
    RecordTooLargeError,
    TopicSpec,
    Transport,
    TransportError,
    is_transient,
)

__all__ = ["Worker"]

logger = logging.getLogger("streamc")

X = TypeVar("X")


class Worker:
    """One running instance of an `App` on one transport."""

    def __init__(
        self,
        app: App,
        transport: Transport,
        *,
        commit_interval: float = 3.0,
        shutdown_timeout: float = 10.0,
        stats_interval: float = 30.0,
        buffer_size: int = 1000,
        fetch_max: int = 500,
        fetch_timeout: float = 0.5,
        revoke_timeout: float = 2.0,
        send_attempts: int = 5,
        send_backoff: float = 0.2,
        state_dir: str | Path | None = None,
    ) -> None:
        if commit_interval <= 0:
            raise ValueError("commit_interval must be > 0")
        if send_attempts < 1:
            raise ValueError("send_attempts must be >= 1")
        self.app = app
        self.transport = transport
        self.commit_interval = commit_interval
        self.shutdown_timeout = shutdown_timeout
        self.stats_interval = stats_interval
        self.buffer_size = buffer_size
        self.fetch_max = fetch_max
        self.fetch_timeout = fetch_timeout
        self.revoke_timeout = revoke_timeout
        # A send that raises a transient error is tried `send_attempts` times in all, waiting
        # `send_backoff` seconds, doubled each time (at most _SEND_BACKOFF_MAX), in between.
        self.send_attempts = send_attempts
        self.send_backoff = send_backoff
        self.conductor = Conductor(self)
        self.offsets = OffsetTracker()
        # Table stores: in memory, or RocksDB under `state_dir` (see `state/table.py`).
        self.tables = WorkerTables(self, state_dir)
        self.takes: list[Any] = []  # take nodes: partial batches to drain or abandon
        self.fused: list[Any] = []  # `Stream.runs()` nodes: the unreached rest of a run
        self.drain_epoch = 0
        # Raised to close every window at the end of `streamc run`'s input (see windows.py).
        self.close_windows_epoch = 0
        self.windowed: list[Any] = []  # windowed aggregate nodes
        self.distinct_counts: dict[str, int] = {}  # agent -> distinct steps built (names)
        self.stream_join_counts: dict[str, int] = {}  # agent -> stream joins built (names)
        self.waiting = 0  # drivers blocked waiting on an empty stream buffer
        # counters, for the stats line and tests
        self.events_in = 0
        self.sent = 0
        self.dead_letters = 0
        self.agent_errors = 0
        self.pauses = 0
        self.batches = 0  # take batches emitted
        # For metrics (`metrics.py` reads them when scraped): plain counters, by name.
        self.sent_to: defaultdict[str, int] = defaultdict(int)  # records sent, by topic
        self.dead_lettered: defaultdict[str, int] = defaultdict(int)  # elements, by agent
        self.hook_errors: defaultdict[str, int] = defaultdict(int)  # by agent
        self.rebalances = 0  # assignments received
        self.assigned = False  # the first assignment arrived (ready: see `metrics.py`)
        self.commit_latency = Latency()
        self.commit_failures = 0
        # Called with each fetched batch before dispatch, if set (metrics count per topic).
        self.on_fetched: Callable[[Sequence[Message]], None] | None = None
        self.failure: BaseException | None = None
        # Set when output may be lost (a delivery failed, or a send never went out) and which
        # messages it came from is unknown: from then on nothing is committed.
        self.output_lost: BaseException | None = None
        self._drivers: set[asyncio.Task[None]] = set()  # agent bodies and forwarding tasks
        # deliveries of forwarded runs not resolved yet (the stop waits for them after flushing)
        self._runs_in_delivery: set[asyncio.Future[Any]] = set()
        self._agent_tasks: dict[str, asyncio.Task[None]] = {}
        self._roots: dict[str, SourceStream[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []  # fetch, commit, stats
        self._left_behind: set[asyncio.Task[Any]] = set()  # by the stop (see `_end`)
        self._fetch_task: asyncio.Task[None] | None = None
        self._dispatching = False
        self._state = "new"
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._gc_held = False  # this worker holds the collector policy (gcpolicy.py)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._state != "new":
            return
        self._state = "starting"
        self.app.current_worker = self
        # A stop (requested, or a failing agent body) may run while start awaits: from then
        # on start must not subscribe or spawn anything, or it would outlive the stop.
        await self.transport.start()
        if self._state != "starting":
            return
        # The dead-letter topic is created after subscribing, while the group join (which
        # takes a broker-side delay, seconds on Kafka) runs: nothing is dead-lettered before
        # the first fetch. Unless an agent reads it, as every topic read must exist first.
        dlq = self.app.dlq
        deferred = [] if any(dlq in a.topics for a in self.app.agents) else [dlq]
        await self.transport.ensure_topics(
            [
                TopicSpec(t.name, t.partitions, t.config)
                for t in self.app.topics.values()
                if t not in deferred
            ]
        )
        if self._state != "starting":
            return
        for agent in self.app.agents:
            root: SourceStream[Any] = self.source_for(agent.topics, agent.name)
            self._roots[agent.name] = root
            task = self.spawn_driver(self._run_agent(agent, root), f"agent {agent.name}")
            self._agent_tasks[agent.name] = task
        # Let every body run to its first wait, so streams built in it (group_by, through)
        # are part of the first subscription instead of forcing a second one.
        for _ in range(5):
            await asyncio.sleep(0)
        if self._state != "starting":
            return
        await self._subscribe()
        if self._state != "starting":
            return
        if deferred:
            await self.transport.ensure_topics([TopicSpec(t.name, t.partitions) for t in deferred])
            if self._state != "starting":
                return
        self._fetch_task = self._spawn(self._fetch_loop(), "fetch")
        self._tasks.append(self._fetch_task)
        self._tasks.append(self._spawn(commit_loop(self), "commit"))
        if self.stats_interval > 0:
            self._tasks.append(self._spawn(stats_loop(self), "stats"))
        self._state = "running"
        # Start-up's objects are all made by now: out of the collector's way from here on.
        self._gc_held = acquire_gc_policy()
        logger.info(
            "worker %s started: agents %s, topics %s",
            self.app.name,
            ", ".join(a.name for a in self.app.agents) or "-",
            ", ".join(self.conductor.topics()) or "-",
        )

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from signal handlers and callbacks)."""
        if self._stop_task is None and self._state in ("starting", "running"):
            self._stop_task = asyncio.get_running_loop().create_task(self._stop(), name="stop")
            # Also if the stop is cancelled (the loop shutting down), half-way or before its
            # first step: a policy held for good would keep the process's heap frozen and
            # its thresholds raised for its life.
            self._stop_task.add_done_callback(self._release_gc)

    async def stop(self) -> None:
        """Stop gracefully; returns once stopped. Idempotent."""
        if self._state == "new":
            self._state = "stopped"
            self._stopped.set()
            return
        self.request_stop()
        await self._stopped.wait()

    async def wait(self) -> int:
        """Until the worker stops: 0 after a clean stop, 1 after a failure."""
        await self._stopped.wait()
        return 1 if self.failure is not None else 0

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def sources(self) -> Mapping[str, SourceStream[Any]]:
        """Each agent's input stream, by agent name."""
        return self._roots

    async def _stop(self) -> None:
        # Every wait here is bounded by `shutdown_timeout`: a step that does not end in time
        # is logged with where it waits, and the stop goes on without it (see `_bounded`).
        try:
            self._state = "stopping"
            # 1. stop fetching: nothing new enters the streams
            if self._fetch_task is not None:
                await self._end(self._fetch_task)
            # 2. finish the element in hand (take flushes its partial batch), within a bound;
            # buffered but unstarted events are abandoned unacked, so they stay uncommitted
            for stream in self.conductor.streams:
                stream.close()
            for node in self.fused:  # a run's elements not reached yet are unstarted too
                node.close()
            drivers = [t for t in self._drivers if not t.done()]
            if drivers:
                _, late = await asyncio.wait(drivers, timeout=self.shutdown_timeout)
                for task in late:
                    logger.warning("%s did not finish in time; abandoned", task.get_name())
                await asyncio.gather(*(self._end(task) for task in late))
            # agents that ended by themselves finished their current element: ack it
            for name, task in self._agent_tasks.items():
                if task.done() and not task.cancelled():
                    for node in self._roots[name]._chain():
                        if node._current is not None:
                            ack_carrier(node._current)
                            node._current = None
            # 3. flush the producer, so forwarded records are durable and release their holds
            stuck = False
            try:
                stuck = not await self._bounded("flushing the producer", self.transport.flush())
            except DeliveryError as exc:
                self.lose_output(exc)
            except Exception:
                logger.exception("flushing the producer failed")
            if stuck:
                # Deliveries may still be under way: the commit would wait for the same
                # producer, and nothing is committed past output not known to be delivered
                # (the next owner redoes what is uncommitted). Exit status 1 says so.
                self.fail(TimeoutError("the producer's flush did not finish at the stop"))
            # let delivery callbacks run before computing the commit: a forwarded run's
            # delivery resolves some callbacks after the batches the flush waited for
            if self._runs_in_delivery:
                await asyncio.wait(set(self._runs_in_delivery), timeout=self.shutdown_timeout)
            await asyncio.sleep(0)
            # 4. checkpoint and close the table stores, commit what is done
            # (ending the stores' readers, then checkpointing: two bounded waits in turn)
            await self._bounded("closing the table stores", self.tables.close(), bounds=2)
            if not stuck:
                await self._bounded("committing", self.commit())
        finally:
            # 5. close
            # Together, and not the fetch task again if it was left behind at step 1.
            ending = [t for t in self._tasks if t not in self._left_behind]
            for task in self._left_behind:
                # Cancelled again, not waited for: one whose cancel a library lost went on
                # (fetching, for the fetch task) and would go on after the stop.
                task.cancel()
            await asyncio.gather(*(self._end(task) for task in ending))
            try:
                await self._bounded("closing the transport", self.transport.stop())
            except Exception:
                logger.exception("closing the transport failed")
            self._state = "stopped"
            self._release_gc()
            if self.app.current_worker is self:
                self.app.current_worker = None
            self._stopped.set()
            logger.info(
                "worker %s stopped: %d in, %d sent, %d dead letters",
                self.app.name,
                self.events_in,
                self.sent,
                self.dead_letters,
            )

    @property
    def _stuck_after(self) -> float:
        # `shutdown_timeout` 0 (`streamc run` stopped by a limit) gives agents no time to
        # finish their element; a step that ends at once still gets the loop turns it needs.
        return max(self.shutdown_timeout, _STUCK_AFTER_MIN)

    async def _end(self, task: asyncio.Task[Any]) -> bool:
        """Cancel one of our tasks and wait up to `shutdown_timeout` for it to end (a stop, a
        revocation); if it does not (a library swallowed the cancel, or its clean-up is
        stuck), say where it waits and leave it."""
        within = self._stuck_after
        if await cancel(task, within):
            return True
        self._left_behind.add(task)
        logger.warning(
            "%s did not end within %.1fs of being cancelled (waiting in %s); left behind",
            task.get_name(),
            within,
            awaiting(task),
        )
        return False

    async def _bounded(
        self, step: str, work: Coroutine[Any, Any, object], bounds: int = 1
    ) -> bool:
        """One step of the stop, given up to `bounds` times `shutdown_timeout` (a step made
        of bounded waits in turn: theirs expire first, and say what they waited for): True
        once it finished (what it raised is raised here), False if it did not; it is then
        logged with where it waits, cancelled and left, and the stop goes on."""
        task = asyncio.get_running_loop().create_task(work, name=f"stop: {step}")
        within = bounds * self._stuck_after
        try:
            await asyncio.wait({task}, timeout=within)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            task.result()
            return True
        logger.warning(
            "stop: %s did not finish within %.1fs (waiting in %s); going on without it",
            step,
            within,
            awaiting(task),
        )
        task.add_done_callback(_retrieved)  # its late failure is no news: the stop went on
        task.cancel()  # not waited for: its own clean-up may be what is stuck
        return False

    def _release_gc(self, _: object = None) -> None:
        if self._gc_held:
            self._gc_held = False
            release_gc_policy()

    def table(self, name: str) -> dict[Any, Any]:
        """The current rows of table `name` in the partitions this worker holds (by key)."""
        live = self.tables.tables.get(name) or self.tables.globals.get(name)
        if live is None:
            if name not in self.app.tables:
                raise KeyError(f"app {self.app.name!r} has no table {name!r}")
            return {}
        return live.rows()

    def fail(self, exc: BaseException) -> None:
        """A background failure: remember it and stop (never stall silently)."""
        if self.failure is None:
            self.failure = exc
        self.request_stop()

    def lose_output(self, exc: BaseException) -> None:
        """Output was lost and the messages it came from are unknown: stop, and commit nothing
        from now on (at-least-once: the next owner redoes all that is uncommitted)."""
        if self.output_lost is None:
            self.output_lost = exc
            logger.error("output lost (%s); stopping without committing any further", exc)
        self.fail(exc)

    def _hook_send_done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.lose_output(_delivery_error(fut))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._guard(coro, name), name=name)

    def spawn_driver(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task that pulls from streams (an agent body or a forwarder)."""
        task = self._spawn(coro, name)
        self._drivers.add(task)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and not task.cancelling():
                # Nobody cancelled this task (e.g. a body awaited something a library
                # cancelled): it is dying, and a dead driver would stall its streams.
                logger.error("%s ended by a CancelledError nobody requested; stopping", name)
                self.fail(exc)
            raise
        except BaseException as exc:  # SystemExit from user code too: logged, exit status 1
            logger.exception("%s failed; stopping the worker", name)
            self.fail(exc)

    # -- streams ----------------------------------------------------------------------------
    def source_for(self, topics: tuple[Topic[Any], ...], agent: str) -> SourceStream[Any]:
        stream: SourceStream[Any] = SourceStream(self, topics, agent)
        self.conductor.add(stream)
        return stream

    async def _run_agent(self, agent: Agent, stream: SourceStream[Any]) -> None:
        AGENT.set(agent.name)  # for log lines (`logs.py`); this task's context only
        while True:
            try:
                await agent.fn(stream)
                return
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a sink's SystemExit too: dead-lettered, like any error
                failed = [node for node in stream._chain() if node._current is not None]
                if not failed:
                    raise  # not while handling an element: a restart would fail the same way
                self.agent_errors += 1
                # The dead letter's own line says what failed; this adds the agent's part.
                logger.debug("agent %s raised while handling an element", agent.name)
                for node in failed:
                    carrier = node._current
                    node._current = None
                    if carrier is not None:
                        await self.dead_letter(carrier, exc, agent.name)

    # -- fetching and committing --------------------------------------------------------------
    async def _subscribe(self) -> None:
        self.conductor.changed = False
        await self.transport.subscribe(self.conductor.topics(), self)

    async def _fetch_loop(self) -> None:
        transport, conductor = self.transport, self.conductor
        while True:
            if conductor.changed:
                await self._subscribe()
            messages = await transport.fetch(self.fetch_timeout, self.fetch_max)
            if messages:
                self.events_in += len(messages)
                if self.on_fetched is not None:
                    self.on_fetched(messages)
                self._dispatching = True
                try:
                    await conductor.dispatch(messages)
                finally:
                    self._dispatching = False
                # One yield per batch lets the agents drain what was just dispatched.
                await asyncio.sleep(0)

    async def commit(self) -> bool:
        """Commit every partition whose committable offset moved; False if the commit failed."""
        if self.output_lost is not None:
            return False
        # RocksDB stores write what their delivered changelog holds (memory stores: nothing).
        await self.tables.checkpoint()
        offsets = self.offsets.to_commit()
        if not offsets:
            return True
        began = time.perf_counter()
        try:
            await self.transport.commit(offsets)
        except DeliveryError as exc:  # the commit's flush found lost output: never commit now
            self.lose_output(exc)
            return False
        except TransportError as exc:  # e.g. the group is rebalancing: expected, and retried
            self.commit_failures += 1
            logger.warning("commit failed; will retry: %s", exc)
            return False
        except Exception:
            self.commit_failures += 1
            logger.exception("commit failed; will retry")
            return False
        self.commit_latency.observe(time.perf_counter() - began)
        self.offsets.mark_committed(offsets)
        return True

    # RebalanceListener
    async def on_partitions_revoked(self, revoked: Collection[TP]) -> None:
        """Abandon what was not started (buffers, partial batches), give elements in hand up
        to `revoke_timeout` to finish, commit, forget. Abandoned work stays uncommitted, so
        the new owner does it; finished work is committed, so it does not do it again."""
        gone = frozenset(revoked)
        self.conductor.revoke(gone)
        for take in self.takes:
            take.abandon(gone)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.revoke_timeout
        states = [self.offsets.partitions[tp] for tp in gone if tp in self.offsets.partitions]
        # Polling (bounded, rare) keeps the ack path free of notification work.
        while any(s.busy() for s in states) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        # Their table stores: checkpointed after a flush, then closed (the next owner restores).
        await self.tables.revoked(gone)
        offsets = self.offsets.to_commit(only=gone)
        if offsets and self.output_lost is None:
            try:
                await self.transport.commit(offsets)
            except DeliveryError as exc:
                self.lose_output(exc)
            except Exception:
                logger.exception("commit on revocation failed")
        self.offsets.forget(gone)

    async def on_partitions_assigned(self, assigned: Collection[TP]) -> None:
        self.rebalances += 1
        self.assigned = True
        self.conductor.reapply()
        self.tables.assigned(assigned)  # their stores start restoring now

    # -- sending ----------------------------------------------------------------------------
    async def forward(
        self,
        topic: Topic[Any],
        value: Any,
        carrier: Carrier,
        *,
        key: Any = ...,
        as_received: bool = False,
    ) -> None:
        """Send `value` to `topic` with the key, headers and timestamp of the element's message
        (or `key`, already encoded); the element's events stay in flight until it is delivered.
        `as_received`: `value` is its message's decoded value, unchanged, so the message's own
        value bytes are sent instead of encoding it again."""
        if as_received and isinstance(carrier, Event):
            data = carrier.message.value
        else:
            data = topic.value_codec.encode(value)
        raw_key, headers = forwarded_key_headers(carrier)
        if topic.positions and isinstance(carrier, Event):
            headers = positioned(carrier.message, headers)
        if isinstance(carrier, Event):  # the common case, without a list of one to walk
            held = [] if carrier._acked else [(carrier._offsets, carrier.message.offset)]
        else:
            held = [(e._offsets, e.message.offset) for e in carrier if not e._acked]
        if key is not ...:
            raw_key = key
        timestamp = forwarded_timestamp(carrier)
        try:
            delivery = await self.transport.send(
                topic.name, data, raw_key, headers, timestamp=timestamp
            )
        except RecordTooLargeError:
            raise  # a data error: the caller dead-letters the element
        except Exception as exc:
            send = partial(
                self.transport.send, topic.name, data, raw_key, headers, timestamp=timestamp
            )
            retried = await self._resend(exc, send, topic.name)
            if retried is None:  # the worker is stopping: keep the element uncommitted
                self._hold_for_good(held)
                return
            delivery = retried
        self.sent += 1
        self.sent_to[topic.name] += 1
        self._hold(delivery, held)

    async def forward_run(
        self,
        topic: Topic[Any],
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        carriers: Sequence[Carrier] | Sequence[Members],
        timestamps: Sequence[int | None] | None = None,
    ) -> None:
        """Send a run of encoded records (one per element, in order) to `topic` at once; the
        elements' `carriers` are acked when every record of the run is delivered, and never
        if any is not (the worker then stops with them uncommitted). `carriers` is one per
        record, or (a forward over chunks) the `Members` of each chunk the records came
        from, with `timestamps` given.

        Per run rather than per record: one `send_many`, one callback, and acks in place of
        a hold and a release per record. Each record keeps its element's timestamp:
        `timestamps` if the caller has them at hand already (one per record), else each
        carrier's `forwarded_timestamp`.

        Raises `RecordTooLargeError` (a data error) only; a transport failure is retried (see
        `_resend`), and if it persists the worker stops with the carriers never acked."""
        if timestamps is None:
            timestamps = [forwarded_timestamp(cast(Carrier, carrier)) for carrier in carriers]
        try:
            delivery = await self.transport.send_many(topic.name, records, timestamps)
        except RecordTooLargeError:
            raise
        except Exception as exc:
            send = partial(self.transport.send_many, topic.name, records, timestamps)
            retried = await self._resend(exc, send, topic.name)
            if retried is None:
                return
            delivery = retried
        self.sent += len(records)
        self.sent_to[topic.name] += len(records)
        if isinstance(delivery, asyncio.Future) and delivery.done():
            self._run_delivered(carriers, delivery)  # now, not a loop step later
            return
        fut = delivery if isinstance(delivery, asyncio.Future) else asyncio.ensure_future(delivery)
        fut.add_done_callback(partial(self._run_delivered, carriers))
        self._runs_in_delivery.add(fut)
        fut.add_done_callback(self._runs_in_delivery.discard)

    def _run_delivered(
        self, carriers: Sequence[Carrier] | Sequence[Members], fut: asyncio.Future[Any]
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            logger.error("delivery failed: %s", _delivery_error(fut))
            self.fail(_delivery_error(fut))
            return
        for carrier in carriers:
            if type(carrier) is Event:  # `carrier._ack()` inlined: this runs per element
                if not carrier._acked:
                    carrier._acked = True
                    carrier._offsets.release(carrier.message.offset)
            elif type(carrier) is Members:
                carrier.ack()
            else:
                ack_carrier(cast(Carrier, carrier))

    async def send_changelog(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
        partitions: Sequence[int],
    ) -> Awaitable[object] | None:
        """A run of changelog records, each to its table partition; None if it never went
        out (transient failures are retried; the worker is then stopping). A record too large
        is no data error here (the state is applied): the worker stops too."""
        send = partial(self.transport.send_many, topic, records, None, partitions=partitions)
        try:
            try:
                delivery = await send()
            except RecordTooLargeError:
                raise
            except Exception as exc:
                retried = await self._resend(exc, send, topic)
                if retried is None:
                    return None
                delivery = retried
        except RecordTooLargeError as exc:
            logger.error("a changelog record of %s is too large: %s; stopping", topic, exc)
            self.fail(exc)
            return None
        self.sent += len(records)
        self.sent_to[topic] += len(records)
        return delivery

    async def send_or_stop(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> Awaitable[Delivery] | None:
        """`transport.send`, retrying transient failures; None if the send never went out
        (the worker is stopping then). Raises `RecordTooLargeError`."""
        try:
            return await self.transport.send(topic, value, key, headers, partition)
        except RecordTooLargeError:
            raise
        except Exception as exc:
            send = partial(self.transport.send, topic, value, key, headers, partition)
            return await self._resend(exc, send, topic)

    async def _resend(
        self, exc: Exception, send: Callable[[], Awaitable[X]], topic: str
    ) -> X | None:
        """Retry a send that raised `exc`: transient errors (`is_transient`) up to
        `send_attempts` tries in all, with exponential backoff. A failure that persists, or
        that retrying cannot fix, is a transport failure, never bad data: the worker stops
        (None is returned) and the caller keeps its messages uncommitted, so the next owner
        sends them again."""
        delay = self.send_backoff
        attempt = 1
        while is_transient(exc) and attempt < self.send_attempts and self.failure is None:
            logger.warning(
                "sending to %s failed (attempt %d/%d): %s; retrying in %.2fs",
                topic,
                attempt,
                self.send_attempts,
                _describe(exc),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _SEND_BACKOFF_MAX)
            attempt += 1
            try:
                return await send()
            except RecordTooLargeError:
                raise
            except Exception as again:
                exc = again
        # Once the worker is failing, later sends give up at once: one line says why.
        (logger.error if self.failure is None else logger.debug)(
            "sending to %s failed after %d attempt(s): %s; stopping the worker, the messages "
            "stay uncommitted",
            topic,
            attempt,
            _describe(exc),
        )
        self.fail(exc)
        return None

    def _hold_for_good(self, held: list[tuple[PartitionOffsets, int]]) -> None:
        """Hold messages whose output is lost so no ack and no commit can pass them."""
        for state, offset in held:
            state.hold(offset)

    def _hold(
        self, delivery: Awaitable[Delivery], held: list[tuple[PartitionOffsets, int]]
    ) -> None:
        """Keep `held` messages in flight until `delivery` resolves; a failed delivery stops
        the worker with them uncommitted (at-least-once: they are re-read after restart)."""
        if isinstance(delivery, asyncio.Future) and delivery.done():
            if not delivery.cancelled() and delivery.exception() is None:
                return  # delivered already (the memory broker): nothing to hold
            # Failed already: hold for good, so the acks that follow cannot make the
            # messages done and the stop's commit cannot pass them.
            self._hold_for_good(held)
            self.fail(_delivery_error(delivery))
            return
        for state, offset in held:
            state.hold(offset)
        if isinstance(delivery, asyncio.Future):
            delivery.add_done_callback(partial(self._delivered, held))
        else:
            asyncio.ensure_future(delivery).add_done_callback(partial(self._delivered, held))

    def _delivered(
        self, held: list[tuple[PartitionOffsets, int]], fut: asyncio.Future[Any]
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            logger.error("delivery failed: %s", _delivery_error(fut))
            self.fail(_delivery_error(fut))
            return
        for state, offset in held:
            state.release(offset)

    async def dead_letter(self, carrier: Carrier, exc: BaseException, agent: str) -> None:
        """Send each event of an element to `<app>-dlq`, then ack it."""
        self.dead_lettered[agent] += 1
        if not isinstance(exc, (DecodeError, RecordTooLargeError)):
            self.hook_errors[agent] += 1  # raised by the agent's own code, not by its data
        for i, event in enumerate(carrier_events(carrier)):
            held = [] if event._acked else [(event._offsets, event.message.offset)]
            # A hook's traceback is logged once per element, with its first event.
            await send_dead(self, event.message, exc, agent, held, traceback=i == 0)
            event._ack()

    async def dead_letter_message(
        self, message: Message, state: PartitionOffsets, exc: BaseException, agents: str
    ) -> None:
        """An undecodable message: dead-lettered once for all subscribers, then done."""
        for agent in agents.split(","):
            self.dead_lettered[agent] += 1
        await send_dead(self, message, exc, agents, [(state, message.offset)])
        state.release(message.offset)

    async def dead_letter_record(self, message: Message, exc: BaseException, agent: str) -> None:
        """An undecodable record read outside the group (a table's topic, while restoring or
        following it): dead-lettered, with no offset of ours to hold."""
        self.dead_lettered[agent] += 1
        await send_dead(self, message, exc, agent, [])

    # -- quiescence (run_local) ---------------------------------------------------------------
    def idle(self) -> bool:
        """Nothing left to fetch, nothing buffered, every driver waiting for data."""
        if self._dispatching or self.conductor.changed or self._state != "running":
            return False
        has_unfetched = getattr(self.transport, "has_unfetched", None)
        if has_unfetched is None or has_unfetched():
            return False
        if any(s.buffer for s in self.conductor.streams):
            return False
        if any(n.closed_epoch != self.close_windows_epoch for n in self.windowed):
            return False
        live = sum(1 for t in self._drivers if not t.done())
        return self.waiting >= live

    def partial_batches(self) -> int:
        return sum(t.pending for t in self.takes)

    def request_close_windows(self) -> None:
        """Move stream time past every window of every windowed table: their final rows are
        emitted (`streamc run`, at the end of its input)."""
        self.close_windows_epoch += 1
        for stream in self.conductor.streams:
            stream.wake()

    def request_drain(self) -> None:
        """Flush every partial `take` batch started before now, once."""
        self.drain_epoch += 1
        for stream in self.conductor.streams:
            stream.wake()


_SEND_BACKOFF_MAX = 5.0
# The least a stop's step (or a cancelled task) is given before it counts as stuck.
_STUCK_AFTER_MIN = 1.0


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _delivery_error(fut: asyncio.Future[Any]) -> BaseException:
    if fut.cancelled():
        return RuntimeError("delivery cancelled")
    exc = fut.exception()
    return exc if exc is not None else RuntimeError("delivery failed")
