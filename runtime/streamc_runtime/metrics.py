"""`--metrics-port`: the worker's HTTP endpoints `/metrics`, `/healthz` and `/readyz`.

Nothing here runs per message. The worker keeps plain counters as it works (`Worker.sent_to`,
`dead_lettered`, `hook_errors`, the source streams' `entered`/`dropped`, the offset tracker);
`WorkerCollector` reads them only when Prometheus scrapes. The two exceptions are cheap and
exist only while metrics are served: messages in per topic are counted per fetched batch
(one addition when the worker reads one topic, one per message otherwise), and a sampler sets
each agent's `sample` flag ten times a second so one element is timed (`SourceStream.sample_tick`).

The server is an asyncio server on the worker's own event loop, so an answer from `/healthz`
proves the loop is turning: a hook that blocks the loop makes the probe time out.

Metric names (all prefixed `streamc_`; documented in docs/operations.md):

    streamc_messages_in_total{topic}              messages fetched and dispatched
    streamc_messages_out_total{topic}             records sent (forwards, hook sends,
                                                  changelogs, dead letters)
    streamc_agent_elements_total{agent}           elements the agent took from its input
    streamc_agent_dead_letters_total{agent}       its elements sent to the dead-letter topic
    streamc_agent_hook_errors_total{agent}        exceptions its code raised (dead-lettered)
    streamc_agent_processing_seconds{agent}       sampled time per element (histogram)
    streamc_messages_in_flight                    fetched, not done (not committable yet)
    streamc_messages_buffered                     waiting in agents' input buffers
    streamc_partition_committed_offset{topic,partition}
    streamc_partition_high_watermark{topic,partition}
    streamc_consumer_lag{topic,partition}         high watermark - next offset to commit
    streamc_assigned_partitions
    streamc_rebalances_total                      assignments received
    streamc_commit_seconds                        offset commit latency (histogram)
    streamc_commit_failures_total
    streamc_table_partitions{table,state}         state: restoring | ready
    streamc_table_rows{table}                     rows in the ready partitions held
                                                  (RocksDB: its estimate of checkpointed keys)
    streamc_worker_ready                          1 when /readyz answers 200
    streamc_process_*                             prometheus-client's process metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .latency import Latency
from .tasks import cancel
from .transport import TP, Message

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["MetricsServer", "WorkerCollector", "readiness"]

logger = logging.getLogger("streamc")

SAMPLE_INTERVAL = 0.1  # seconds between two sampled elements per agent
_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST = 8192


def readiness(worker: Worker) -> str | None:
    """None when ready (connected, an assignment received, every table partition held
    restored), else why not."""
    if not worker.running:
        return "not running (starting or stopping)"
    if not worker.assigned:
        return "waiting for a partition assignment"
    restoring = [
        f"{name}[{q}]"
        for name, live in sorted(worker.tables.tables.items())
        for q, held in sorted(live.held.items())
        if not held.ready.is_set()
    ]
    if restoring:
        return "restoring " + ", ".join(restoring)
    return None


def health(worker: Worker) -> str | None:
    """None when healthy (the worker has not failed), else why not. That the event loop
    turns is proved by the answer itself."""
    if worker.failure is not None:
        return f"failed: {type(worker.failure).__name__}: {worker.failure}"
    return None


class WorkerCollector:
    """A prometheus-client collector reading a worker's counters at scrape time."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.messages_in: defaultdict[str, int] = defaultdict(int)

    def count_fetched(self, messages: Sequence[Message]) -> None:
        """`Worker.on_fetched`: messages in per topic, per batch."""
        counts = self.messages_in
        first = messages[0].topic
        if len(self.worker.conductor.topics()) == 1:  # one topic read: no need to look
            counts[first] += len(messages)
            return
        for m in messages:
            counts[m.topic] += 1

    def describe(self) -> list[Metric]:
        return []  # families vary with the topology: collected each scrape, never cached

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        yield _counter(
            "streamc_messages_in", "Messages fetched and dispatched, by topic.", "topic",
            self.messages_in,
        )  # fmt: skip
        yield _counter(
            "streamc_messages_out", "Records sent, by topic (forwards, hook sends, "
            "changelogs, dead letters).", "topic", worker.sent_to,
        )  # fmt: skip
        sources = worker.sources
        yield _counter(
            "streamc_agent_elements",
            "Elements each agent took from its input.",
            "agent",
            {a: s.entered - s.buffered() - s.dropped for a, s in sources.items()},
        )
        yield _counter(
            "streamc_agent_dead_letters",
            "Elements each agent sent to the dead-letter topic.",
            "agent",
            dict.fromkeys(sources, 0) | worker.dead_lettered,
        )
        yield _counter(
            "streamc_agent_hook_errors",
            "Exceptions raised by each agent's own code (hooks, sinks, result checks); "
            "each element is dead-lettered.",
            "agent",
            dict.fromkeys(sources, 0) | worker.hook_errors,
        )
        processing = HistogramMetricFamily(
            "streamc_agent_processing_seconds",
            "Time from handing an element to the agent until it asks for the next one, "
            f"sampled (one element every {SAMPLE_INTERVAL}s).",
            labels=["agent"],
        )
        for agent, source in sorted(sources.items()):
            _add_histogram(processing, [agent], source.latency)
        yield processing
        yield _gauge(
            "streamc_messages_in_flight",
            "Messages fetched and not done yet (they hold the commit back).",
            worker.offsets.in_flight(),
        )
        yield _gauge(
            "streamc_messages_buffered",
            "Messages waiting in the agents' input buffers.",
            sum(s.buffered() for s in worker.conductor.streams),
        )
        yield from self._partitions()
        yield _gauge(
            "streamc_assigned_partitions",
            "Partitions assigned to this worker.",
            len(worker.transport.assignment()) if worker.running else 0,
        )
        rebalances = CounterMetricFamily(
            "streamc_rebalances", "Partition assignments this worker received."
        )
        rebalances.add_metric([], worker.rebalances)
        yield rebalances
        commits = HistogramMetricFamily("streamc_commit_seconds", "Offset commit latency.")
        _add_histogram(commits, [], worker.commit_latency)
        yield commits
        failures = CounterMetricFamily(
            "streamc_commit_failures", "Offset commits that failed (retried at the next one)."
        )
        failures.add_metric([], worker.commit_failures)
        yield failures
        yield from self._tables()
        yield _gauge(
            "streamc_worker_ready",
            "1 when the worker is ready (/readyz answers 200), else 0.",
            1 if readiness(worker) is None else 0,
        )

    def _partitions(self) -> Iterator[Metric]:
        worker = self.worker
        committed = GaugeMetricFamily(
            "streamc_partition_committed_offset",
            "The last offset this worker committed, by partition.",
            labels=["topic", "partition"],
        )
        highwater = GaugeMetricFamily(
            "streamc_partition_high_watermark",
            "The partition's end as of the latest fetch response.",
            labels=["topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "streamc_consumer_lag",
            "Messages not done yet: the high watermark minus the next offset to commit.",
            labels=["topic", "partition"],
        )
        watermark = getattr(worker.transport, "highwater", None)
        for tp, state in sorted(worker.offsets.partitions.items()):
            labels = [tp.topic, str(tp.partition)]
            if state.committed is not None:
                committed.add_metric(labels, state.committed)
            end = watermark(TP(*tp)) if watermark is not None else None
            if end is None:
                continue
            highwater.add_metric(labels, end)
            done = state.committable()
            if done is not None:
                lag.add_metric(labels, max(end - done, 0))
        yield committed
        yield highwater
        yield lag

    def _tables(self) -> Iterator[Metric]:
        partitions = GaugeMetricFamily(
            "streamc_table_partitions",
            "Table partitions held by this worker, restoring or ready.",
            labels=["table", "state"],
        )
        rows = GaugeMetricFamily(
            "streamc_table_rows", "Rows in the ready table partitions held.", labels=["table"]
        )
        for name, live in sorted(self.worker.tables.tables.items()):
            ready = [h for h in live.held.values() if h.ready.is_set()]
            partitions.add_metric([name, "restoring"], len(live.held) - len(ready))
            partitions.add_metric([name, "ready"], len(ready))
            rows.add_metric([name], sum(h.store.size() for h in ready))
        yield partitions
        yield rows


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _add_histogram(family: HistogramMetricFamily, labels: list[str], latency: Latency) -> None:
    family.add_metric(labels, [(le, float(n)) for le, n in latency.cumulative()], latency.sum)


class MetricsServer:
    """The HTTP endpoints, served on the worker's event loop."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = WorkerCollector(worker)
        self.registry.register(self.collector)
        ProcessCollector(namespace="streamc", registry=self.registry)
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve (OSError if the address cannot be bound); `port` 0 picks a free
        port, which `self.port` then holds."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_MAX_REQUEST
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.worker.on_fetched = self.collector.count_fetched
        self._sampler = asyncio.get_running_loop().create_task(self._sample(), name="sampler")
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._sampler is not None:
            await cancel(self._sampler)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.worker.on_fetched = None

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            for source in self.worker.sources.values():
                source.sample = True

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """`(status, content type, body)` for a request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, _generate_latest(self.registry)
        if path in ("/healthz", "/readyz"):
            why = health(self.worker) if path == "/healthz" else readiness(self.worker)
            if why is None:
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", why.encode() + b"\n"
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                raise ValueError("bad request line")
            try:
                status, ctype, body = self.respond(parts[0], parts[1])
            except Exception:  # a bug in a collector: answered, logged, never fatal
                logger.exception("serving %s failed", parts[1])
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            reason = _REASONS[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if parts[0] != "HEAD":
                writer.write(body)
            await writer.drain()
        except (
            TimeoutError,
            ValueError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # a client that went away, or spoke no HTTP: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


_REASONS = {
    200: "OK",
    500: "Internal Server Error",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
