"""Runtime benchmark: one agent passing small JSON records through on the memory broker.

    python bench/bench_runtime.py            # 1,000,000 records; memory at 1M and 5M
    python bench/bench_runtime.py --quick    # 100,000 records; memory at 100k and 500k

Throughput: the same N encoded records are (a) decoded by a bare loop that only calls
`json.loads` on each value and (b) consumed by a worker with one agent (`async for run in
stream.runs()`, then `for order in run`, as generated code loops) that decodes them into a
typed Record, acks them (once per run) and commits the offsets. Both
run in this process, on the same bytes; the ratio is (a)'s time over (b)'s (>= 1.0 means the
runtime is at least as fast as the bare loop). Each timed section begins with a `gc.collect()`,
so neither pays for collecting the set-up's objects.

Memory: each size runs in a fresh subprocess that reports its peak RSS (VmHWM; ru_maxrss
where /proc is missing). The input
is fed into the broker while the worker runs, never more than FEED_AHEAD messages ahead of
the committed offset, and committed messages are trimmed (as Kafka's retention would do), so
the broker's input bytes are bounded and the same at every size: what grows, if anything,
is the runtime's own memory. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time
from typing import Any

from streamc_runtime import App, Record, Stream, Worker
from streamc_runtime.memory import MemoryBroker, MemoryTransport
from streamc_runtime.transport import TP

FEED_AHEAD = 50_000
PARTITIONS = 4


class Order(Record, kw_only=True):
    id: int
    account_id: str
    amount: float


def _value(i: int) -> bytes:
    return b'{"id":%d,"account_id":"acct-%d","amount":%d.5}' % (i, i % 1000, i % 100)


def _app(counter: list[int]) -> App:
    app = App("bench")
    orders = app.topic("orders", key_type=str, value_type=Order, partitions=PARTITIONS)

    @app.agent(orders, name="passthrough")
    async def passthrough(stream: Stream[Order]) -> None:
        n = 0
        async for run in stream.runs():  # the loop generated code runs (a fused pipeline)
            for _order in run:
                n += 1
                counter[0] = n

    return app


def _committed(broker: MemoryBroker) -> int:
    return sum(broker.committed("bench", TP("orders", p)) or 0 for p in range(PARTITIONS))


async def _run_worker(broker: MemoryBroker, n: int, feed: list[bytes] | None) -> float:
    """Run the app until all `n` records are processed and committed; seconds taken."""
    counter = [0]
    app = _app(counter)
    broker.create_topic("orders", PARTITIONS)
    worker = Worker(app, MemoryTransport(broker, app.name), stats_interval=0, commit_interval=0.1)
    start = time.perf_counter()
    await worker.start()
    produced = 0
    while counter[0] < n:
        if feed is None and produced < n and produced - _committed(broker) < FEED_AHEAD:
            upto = min(n, produced + 10_000)
            for i in range(produced, upto):
                broker.produce("orders", _value(i), partition=i % PARTITIONS)
            produced = upto
            broker.trim()
        await asyncio.sleep(0.002)
    await worker.stop()  # flushes and commits
    elapsed = time.perf_counter() - start
    assert _committed(broker) == n, (_committed(broker), n)
    return elapsed


def throughput(n: int) -> None:
    values = [_value(i) for i in range(n)]
    broker = MemoryBroker()
    broker.create_topic("orders", PARTITIONS)
    for i, v in enumerate(values):
        broker.produce("orders", v, partition=i % PARTITIONS)

    loads = json.loads
    # Each timed section starts with no garbage from the set-up: otherwise the section that
    # happens to allocate past the collector's threshold first pays for collecting the
    # set-up's young objects (the 1M-item `values` list, the broker's sealed chunks), which
    # measured 60-90 ms of the runtime's ~450 ms while the bare loop, allocating no containers,
    # triggered none.
    gc.collect()
    t0 = time.perf_counter()
    for v in values:
        loads(v)
    bare = time.perf_counter() - t0

    gc.collect()
    runtime = asyncio.run(_run_worker(broker, n, feed=values))
    print(f"throughput, {n:,} records of ~{sum(map(len, values)) // n} bytes:")
    print(f"  bare json.loads loop : {bare:6.2f} s  ({n / bare:12,.0f} msg/s)")
    print(f"  runtime (decode, ack, commit): {runtime:6.2f} s  ({n / runtime:12,.0f} msg/s)")
    print(f"  ratio bare/runtime   : {bare / runtime:6.2f}  (target >= 1.0)")


def _peak_kib() -> int:
    """Peak RSS of this process image. Linux carries ru_maxrss across exec (so a child would
    report its parent's peak if larger); VmHWM belongs to the new address space only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(n: int) -> None:
    broker = MemoryBroker()
    asyncio.run(_run_worker(broker, n, feed=None))
    print(json.dumps({"n": n, "peak_kib": _peak_kib()}))


def memory(small: int, large: int) -> None:
    peaks: dict[int, int] = {}
    for n in (small, large):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        peaks[n] = json.loads(out.strip().splitlines()[-1])["peak_kib"]
    print(f"peak memory (fresh process each; input fed <= {FEED_AHEAD:,} ahead, then trimmed):")
    for n, kib in peaks.items():
        print(f"  {n:>10,} messages: {kib / 1024:7.1f} MiB")
    print(
        f"  growth {large:,} vs {small:,}: {100 * (peaks[large] / peaks[small] - 1):+.1f}%"
        "  (target within 20%)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k records (smoke run)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    args: Any = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    n = 100_000 if args.quick else 1_000_000
    throughput(n)
    if not args.no_memory:
        memory(n, 5 * n)


if __name__ == "__main__":
    main()
