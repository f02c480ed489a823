"""Windows benchmark: flat memory over many events of a 1-minute tumbling count per key.

    python bench/bench_windows.py                 # 10,000,000 events, 1,000 keys (~10 min)
    python bench/bench_windows.py --quick         # 1,000,000 events
    python bench/bench_windows.py -n 2000000      # any other number
    python bench/bench_windows.py --cpu           # CPU per element, P5's shape (below)

One agent `from clicks | aggregate per_key window tumbling 1m emit final | to counts` on the
memory broker, the input keyed by 1,000 keys, event times advancing 10 ms per event (so a
window holds 6,000 events and closes every 6,000 events). The input is fed while the worker
runs, never more than FEED_AHEAD events ahead of the commit, and committed input is trimmed
(Kafka's retention). The changelog and output topics are trimmed too (the memory broker
neither compacts nor expires; no restore happens here), so what the RSS shows is the
runtime's own memory: it stays flat only if closed windows leave the store. Prints the RSS
(VmRSS) and the peak RSS so far (VmHWM) at intervals and at 1M, 5M and 10M events, the open
windows and the throughput; asserts nothing.

`--cpu`: the window step's cost per element in P5's shape (1-minute tumbling windows with an
hour's grace, emit updates, an event every 60 ms of event time over 1,000 keys, so nearly
every event opens a window and one closes; the rows taken in runs, as a generated `sink`
takes them), 200,000 events (or -n) on the memory broker, against the same agent passing
its input through; CPU µs per element of each, 3 runs each, alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec
from streamc_runtime import App, Record, Stream, Tumbling, Window, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP

FEED_AHEAD = 50_000
PARTITIONS = 4
STEP_MS = 10


class Click(Record, kw_only=True):
    user: str


class Count(Record, kw_only=True):
    user: str
    start_ms: int
    clicks: int


class CountState(Record, kw_only=True):
    clicks: int = 0


def fold(state: CountState, click: Click) -> CountState:
    state.clicks += 1
    return state


def row(key: str, window: Window, state: CountState) -> Count:
    return Count(user=key, start_ms=window.start_ms, clicks=state.clicks)


def _app() -> App:
    app = App("bench")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=PARTITIONS)
    counts = app.topic("counts", key_type=str, value_type=Count, partitions=PARTITIONS)
    table = app.table(
        "per_key",
        key_type=str,
        value_type=Count,
        state_type=CountState,
        partitions=PARTITIONS,
        window=Tumbling(size=60_000),
    )

    @app.agent(clicks, name="per_key")
    async def per_key(stream: Stream[Click]) -> None:
        async for _ in stream.aggregate(table, fold=fold, row=row, emit="final").to(counts):
            pass

    return app


def _rss_mib(field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (the peak so far) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


# Where the peak is reported whatever the interval: the figures docs/performance.md quotes.
MILESTONES = (1_000_000, 5_000_000, 10_000_000)


def _committed(broker: MemoryBroker) -> int:
    return sum(broker.committed("bench", TP("clicks", p)) or 0 for p in range(PARTITIONS))


def _drop(broker: MemoryBroker, topic: str) -> None:
    """Forget what a topic holds (a stand-in for compaction and retention)."""
    # `trim`, not the `messages` list: that is a copy of the stored chunks.
    for part in broker._topics[topic]:
        part.trim(part.end)


async def run(n: int, keys: int, every: int) -> None:
    app = _app()
    broker = MemoryBroker()
    for topic in app.topics.values():
        broker.create_topic(topic.name, topic.partitions)
    values = [
        (f"user{k}".encode(), msgspec.json.encode(Click(user=f"user{k}"))) for k in range(keys)
    ]
    worker = Worker(app, MemoryTransport(broker, app.name), stats_interval=0, commit_interval=0.1)
    await worker.start()
    start = time.perf_counter()
    produced, next_report = 0, 0
    milestones = [m for m in MILESTONES if m <= n]
    finals = 0
    print(f"{n:,} events, {keys:,} keys, tumbling 1m, an event every {STEP_MS} ms of event time")
    while _committed(broker) < n:
        if produced < n and produced - _committed(broker) < FEED_AHEAD:
            upto = min(n, produced + 10_000)
            for i in range(produced, upto):
                key, value = values[i % keys]
                p = i % PARTITIONS
                broker.produce("clicks", value, key, (), p, i * STEP_MS)
            produced = upto
        # Every round, the last FEED_AHEAD events too (else they pile up untrimmed at the end).
        broker.trim()
        finals += sum(part.end - part.base for part in broker._topics["counts"])
        _drop(broker, "counts")
        _drop(broker, "bench-per_key-changelog")
        at_milestone = bool(milestones) and _committed(broker) >= milestones[0]
        if produced >= next_report or at_milestone:
            open_windows = sum(
                len(list(h.store.items())) for h in worker.tables.tables["per_key"].held.values()
            )
            if at_milestone:
                # Measured once the worker has committed that many: the events were handled.
                print(
                    f"  at {milestones.pop(0):>9,} events handled: peak RSS"
                    f" {_rss_mib('VmHWM'):7.1f} MiB  RSS {_rss_mib():7.1f} MiB"
                    f"  open windows {open_windows:6,}",
                    flush=True,
                )
            else:
                print(
                    f"  {produced:>12,} events  RSS {_rss_mib():7.1f} MiB"
                    f"  peak {_rss_mib('VmHWM'):7.1f} MiB"
                    f"  open windows {open_windows:6,}  finals {finals:9,}"
                    f"  {time.perf_counter() - start:7.1f}s",
                    flush=True,
                )
                next_report += every
        await asyncio.sleep(0.002)
    for milestone in milestones:  # the last one is reached as the loop ends
        print(
            f"  at {milestone:>9,} events handled: peak RSS {_rss_mib('VmHWM'):7.1f} MiB"
            f"  RSS {_rss_mib():7.1f} MiB",
            flush=True,
        )
    await worker.stop()
    elapsed = time.perf_counter() - start
    finals += sum(part.end - part.base for part in broker._topics["counts"])
    print(
        f"done: {n:,} events in {elapsed:.1f}s ({n / elapsed:,.0f}/s), {finals:,} final rows,"
        f" RSS {_rss_mib():.1f} MiB, peak {_rss_mib('VmHWM'):.1f} MiB"
    )


def _cpu_app(counter: list[int], window: bool) -> App:
    app = App("bench")
    clicks = app.topic("clicks", key_type=str, value_type=Click, partitions=PARTITIONS)
    table = app.table(
        "per_key",
        key_type=str,
        value_type=Count,
        state_type=CountState,
        partitions=PARTITIONS,
        window=Tumbling(size=60_000, grace=3_600_000),
    )

    @app.agent(clicks, name="per_key")
    async def per_key(stream: Stream[Click]) -> None:
        source: Stream[Any] = stream.aggregate(table, fold=fold, row=row) if window else stream
        async for run in source.runs():
            counter[0] += len(run)

    return app


async def _cpu_run(n: int, window: bool) -> float:
    """CPU seconds of the process while a worker handles `n` events."""
    broker = MemoryBroker()
    broker.create_topic("clicks", PARTITIONS)
    for i in range(n):
        key = f"user{i % 1000}".encode()
        broker.produce("clicks", b'{"user":"%s"}' % key, key, (), i % PARTITIONS, i * 60)
    counter = [0]
    app = _cpu_app(counter, window)
    worker = Worker(app, MemoryTransport(broker, "bench"), stats_interval=0, commit_interval=0.1)
    cpu = time.process_time()
    await worker.start()
    while counter[0] < n:  # noqa: ASYNC110 - a bench polls
        await asyncio.sleep(0.002)
    await worker.stop()
    return time.process_time() - cpu


def cpu(n: int) -> None:
    print(f"{n:,} events, 1,000 keys, tumbling 1m grace 60m, emit updates, an event every 60 ms")
    figures: dict[str, list[float]] = {"pass-through": [], "window": []}
    for _ in range(3):
        for what in figures:
            figures[what].append(asyncio.run(_cpu_run(n, what == "window")) / n * 1e6)
    for what, us in figures.items():
        us.sort()
        print(f"  {what:12}: CPU {us[1]:5.2f} us/element (min {us[0]:.2f}, max {us[2]:.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, help="events (default 10,000,000)")
    parser.add_argument("--quick", action="store_true", help="1,000,000 events")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--every", type=int, default=0, help="report interval (events)")
    parser.add_argument("--cpu", action="store_true", help="CPU per element (see above)")
    args = parser.parse_args(argv)
    if args.cpu:
        cpu(args.n or 200_000)
        return
    if args.n is None:
        args.n = 1_000_000 if args.quick else 10_000_000
    asyncio.run(run(args.n, args.keys, args.every or max(args.n // 20, 10_000)))


if __name__ == "__main__":
    main()
