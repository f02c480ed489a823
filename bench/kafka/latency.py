"""Kafka latency benchmark: produce-to-output latency at a steady input rate, and the
per-partition progress skew over a backlog, for streamc, raw aiokafka, Quix Streams and Faust.

    .venv/bin/python bench/kafka/latency.py --quick   # 3 s per rate, a 4 x 2,500 backlog
    .venv/bin/python bench/kafka/latency.py           # 20 s per rate, a 4 x 25,000 backlog

(`pip install -e '.[bench]'` first, as for run.py.)

One invocation starts one Tansu broker (as run.py does) and, for every pipeline, rate and
implementation, one process of that implementation on fresh topics and a fresh group:

    copy   from orders | to out
    rekey  from orders | group_by account_id | to out   (through a repartition topic)

Latency: once the process has forwarded a first warm-up order (so start-up and the group join
are excluded), a separate load process produces orders at the given rate for the given time,
round-robin over 4 partitions, in ticks of `--tick-ms` (default 5 ms, the linger of librdkafka's
and Kafka 4's default producer). Each order carries its produce time (`sent`, seconds since the
epoch, taken when the record is appended to the producer's batch) in its JSON value. A tick
sends one batch per partition, so the tick sets how many batches per second the broker stores
and every consumer reads; Tansu's memory store pays for each stored batch on every later fetch
(docs/performance.md, "Where the 20 s tail came from"), and `--tick-ms 1` is that stress case.
The harness reads the output topic from its own consumer and takes, for each order, its first
arrival time minus `sent`: p50, p99 and max over every order of the steady phase. An
implementation that cannot keep up shows it here as growing latency (and as orders not
delivered within the wait).

Beside them: the process's CPU time per order over the steady phase (user + system, what a
shared machine changes least); the broker's CPU use over the steady phase (near 100% of a core,
the broker is the bottleneck and every implementation's latency is its queue; it includes the
harness's own readers, two of them for rekey on streamc and the raw loop); p99 over each 4 s of
the phase (a rising row: falling behind); and for rekey on streamc and the raw loop, p50/p99
of each hop (produced to the repartition topic, and from there to the output; read by a second
consumer), which tells time lost on the way in from time lost on the read-back.

Skew: 4 x B orders are produced before the process starts, and the copy pipeline runs into a
one-partition output topic, whose order is then the order the implementation handled them in.
Skew = the largest difference between two input partitions' counts of handled orders, over
every prefix of that order while every partition still had orders left; "all touched" = how
many orders were handled before the last partition's first one.

The same group settings as run.py (session 2 s, heartbeat 0.3 s, fetch max wait 100 ms,
commits every 1 s, no idempotent producer) for every implementation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as throughput  # noqa: E402  (the broker, precompiling, stopping a process)
import streamc_runtime  # noqa: E402

IMPLS = ("streamc", "raw-aiokafka", "quix", "faust")
PIPELINES = ("copy", "rekey")
PARTITIONS = 4
ACCOUNTS = 1000
TOPIC_CONFIGS = {"retention.ms": "604800000", "retention.bytes": "-1"}  # see run.py


# -- the load --------------------------------------------------------------------------------


def order_value(oid: str, i: int, sent: float) -> bytes:
    account = (i * 7919) % ACCOUNTS
    amount = (i * 37) % 50000 / 100
    return (
        f'{{"id":"{oid}","account_id":"acct-{account:04d}","amount":{amount},'
        f'"currency":"EUR","sent":{sent:.6f}}}'
    ).encode()


async def generate(
    bootstrap: str, topic: str, rate: float, seconds: float, tick: float, prefix: str
) -> tuple[int, float]:
    """Produce `rate` orders per second for `seconds`, in ticks of `tick` seconds, each stamped
    with the time it is appended; batches per partition (a `send` per record would make this
    process, not the one under test, the bottleneck at 50,000/s). Returns the orders and the
    seconds from the first tick to the last acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=1_048_576
    )
    await producer.start()
    total = int(rate * seconds)
    pending: list[asyncio.Future[Any]] = []
    done = 0
    try:
        began = time.monotonic()
        while done < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            if due > done:
                now = time.time()
                builders: dict[int, Any] = {}
                for i in range(done, due):
                    p = i % PARTITIONS
                    oid = f"{prefix}-{i:08d}"
                    builder = builders.get(p)
                    if builder is None:
                        builder = builders[p] = producer.create_batch()
                    builder.append(
                        timestamp=None, key=oid.encode(), value=order_value(oid, i, now), headers=[]
                    )
                for p, builder in builders.items():
                    pending.append(await producer.send_batch(builder, topic, partition=p))
                done = due
            await asyncio.sleep(tick)
        await asyncio.gather(*pending)
        span = time.monotonic() - began
    finally:
        await producer.stop()
    return total, span


async def produce_backlog(bootstrap: str, topic: str, per_partition: int) -> None:
    """`per_partition` orders on each partition, ids `s<partition>-<i>`."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1_048_576
    )
    await producer.start()
    try:
        now = time.time()
        for start in range(0, per_partition, 5000):
            futures = []
            for p in range(PARTITIONS):
                for i in range(start, min(per_partition, start + 5000)):
                    oid = f"s{p}-{i:08d}"
                    futures.append(
                        await producer.send(
                            topic, order_value(oid, i, now), key=oid.encode(), partition=p
                        )
                    )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, n, 1, topic_configs=dict(TOPIC_CONFIGS)) for t, n in topics.items()]
        )
    finally:
        await admin.close()


# -- the measurement -------------------------------------------------------------------------


class Measurer:
    """Reads the output topic from the beginning; keeps each order's first arrival."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.arrived: dict[str, float] = {}  # id -> arrival time (time.time())
        self.sent: dict[str, float] = {}  # id -> its `sent`
        self.order: list[str] = []  # ids in output order (first arrivals)
        self.duplicates = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Short: the measuring consumer's own wait would add to every implementation's
            # figures (the broker answers a fetch early only once it has data).
            fetch_max_wait_ms=5,
        )
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.get_running_loop().create_task(self._read(consumer))

    async def _read(self, consumer: Any) -> None:
        arrived, sent, order = self.arrived, self.sent, self.order
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batches.values():
                    for r in records:
                        value = orjson.loads(r.value)
                        oid = value["id"]
                        if oid in arrived:
                            self.duplicates += 1
                            continue
                        arrived[oid] = now
                        sent[oid] = value["sent"]
                        order.append(oid)
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def worst_skew(order: list[str], per_partition: int) -> tuple[int, int]:
    """(largest progress gap between two partitions while all had orders left, orders handled
    before the last partition's first)."""
    counts = [0] * PARTITIONS
    worst = 0
    backlog = True  # every partition still has orders left
    touched_all = -1
    for n, oid in enumerate(order):
        counts[int(oid[1 : oid.index("-")])] += 1
        if touched_all < 0 and min(counts) > 0:
            touched_all = n
        backlog = backlog and max(counts) < per_partition
        if backlog:
            worst = max(worst, max(counts) - min(counts))
    return worst, touched_all


# -- implementations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


def build_streamc(pipeline: str, group: str, topic: str, out: str, rundir: Path) -> Path:
    src = (HERE / "pipelines" / f"lat_{pipeline}.sdl").read_text()
    text, apps = re.subn(rf"^app bench_lat_{pipeline}$", f"app {group}", src, flags=re.M)
    text, ins = re.subn(r'name "bench\.orders"', f'name "{topic}"', text)
    text, outs = re.subn(r'name "bench\.out"', f'name "{out}"', text)
    if (apps, ins, outs) != (1, 1, 1):
        raise SystemExit(f"lat_{pipeline}.sdl: expected one `app` line and two topic names")
    sdl = rundir / "sdl" / f"{group}.sdl"
    sdl.parent.mkdir(parents=True, exist_ok=True)
    sdl.write_text(text)
    target = rundir / "build" / f"{group}_worker"
    streamc = Path(sys.executable).with_name("streamc")
    proc = subprocess.run(
        [str(streamc), "build", str(sdl), "-o", str(target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"streamc build {sdl} failed:\n{proc.stdout}{proc.stderr}")
    throughput.precompile(target)
    return target


def launch(impl: str, pipeline: str, group: str, topic: str, out: str, rundir: Path) -> Launch:
    env = dict(os.environ)
    if impl == "streamc":
        path = build_streamc(pipeline, group, topic, out, rundir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
        env.pop("STREAMC_BROKER", None)
        env.update(
            STREAMC_KAFKA_SESSION_TIMEOUT_MS=str(throughput.SESSION_TIMEOUT_MS),
            STREAMC_KAFKA_HEARTBEAT_INTERVAL_MS=str(throughput.HEARTBEAT_INTERVAL_MS),
            STREAMC_KAFKA_FETCH_MAX_WAIT_MS=str(throughput.FETCH_MAX_WAIT_MS),
            STREAMC_KAFKA_ENABLE_IDEMPOTENCE="false",
        )
        argv = [
            sys.executable, "-m", f"{group}_worker", "--broker", f"kafka://{BOOTSTRAP[0]}",
            "--commit-interval", str(throughput.COMMIT_INTERVAL), "--log-level", "WARNING",
        ]  # fmt: skip
        return Launch(argv, env)
    script = {"raw-aiokafka": "lat_raw.py", "quix": "lat_quix.py", "faust": "lat_faust.py"}[impl]
    state = rundir / "state" / group
    state.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, str(HERE / "peers" / script),
        "--bootstrap", BOOTSTRAP[0], "--topic", topic, "--out", out, "--group", group,
        "--pipeline", pipeline, "--commit-interval", str(throughput.COMMIT_INTERVAL),
        "--session-timeout-ms", str(throughput.SESSION_TIMEOUT_MS),
        "--heartbeat-interval-ms", str(throughput.HEARTBEAT_INTERVAL_MS),
        "--fetch-max-wait-ms", str(throughput.FETCH_MAX_WAIT_MS),
        "--state-dir", str(state),
    ]  # fmt: skip
    return Launch(argv, env)


BOOTSTRAP: list[str] = []  # set once the broker is up
BROKER_PID: list[int] = []


def broker_pid(bootstrap: str) -> int:
    """The Tansu process listening on `bootstrap` (for its CPU time)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--listener-url tcp://{bootstrap} "], capture_output=True, text=True
    ).stdout.split()
    if len(found) != 1:
        raise SystemExit(f"latency.py: expected one broker process on {bootstrap}, found {found}")
    return int(found[0])


async def start_process(how: Launch, log: Path, rundir: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            *how.argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=how.env,
            cwd=str(rundir),
            preexec_fn=throughput.tansu_broker.die_with_parent,
        )


async def until(cond: Callable[[], bool], proc: asyncio.subprocess.Process, within: float) -> bool:
    deadline = time.monotonic() + within
    while not cond():
        if proc.returncode is not None or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# -- runs ------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    pipeline: str
    rate: int
    impl: str
    ok: bool = False
    problem: str = ""
    produced: int = 0
    delivered: int = 0
    duplicates: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cpu_us: float | None = None  # the process's CPU time per order of the steady phase
    broker_cpu: float | None = None  # the broker's CPU seconds per second of the steady phase
    p99_by_window: list[float] = field(default_factory=list)  # p99 (ms) of each 4 s by `sent`
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkewResult:
    impl: str
    per_partition: int
    ok: bool = False
    problem: str = ""
    skew: int | None = None
    all_touched: int | None = None
    log: str = ""


async def latency_run(
    pipeline: str, rate: int, impl: str, seconds: float, tick_ms: float, run_id: str, rundir: Path
) -> LatencyResult:
    result = LatencyResult(pipeline, rate, impl)
    hop: Measurer | None = None
    tag = f"{impl.replace('-', '_')}_{pipeline}_{rate // 1000}k_{run_id}"
    topic, out = f"lat-{tag}", f"lat-{tag}-out"
    await create_topics(BOOTSTRAP[0], {topic: PARTITIONS, out: PARTITIONS})
    measurer = Measurer(BOOTSTRAP[0], out, PARTITIONS)
    await measurer.start()
    log = rundir / f"{tag}.log"
    result.log = str(log)
    proc = await start_process(launch(impl, pipeline, tag, topic, out, rundir), log, rundir)
    try:
        # Warm up: one order every 100 ms until one comes out (start-up and joins excluded).
        warm = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP[0], acks="all")
        await warm.start()
        try:
            began = time.monotonic()
            i = 0
            while not measurer.arrived:
                if proc.returncode is not None or time.monotonic() - began > 120:
                    result.problem = "no output from warm-up orders within 120 s"
                    return result
                oid = f"w-{i:08d}"
                await warm.send(topic, order_value(oid, i, time.time()), key=oid.encode())
                i += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # the rest of the warm-up orders come out
        finally:
            await warm.stop()
        if pipeline == "rekey" and impl in ("streamc", "raw-aiokafka"):
            # The first hop's arrivals too (the repartition topic exists by now): whether
            # time is lost on the way in or on the read-back.
            hop = Measurer(BOOTSTRAP[0], repartition_topic(impl, tag), PARTITIONS)
            await hop.start()
        cpu_before = throughput._cpu_seconds(proc.pid)
        broker_before = throughput._cpu_seconds(BROKER_PID[0])
        gen = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "_generate", BOOTSTRAP[0], topic, str(rate), str(seconds),
            str(tick_ms / 1000), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, _ = await gen.communicate()
        broker_after = throughput._cpu_seconds(BROKER_PID[0])
        load = json.loads(stdout)
        result.produced = int(load["produced"])
        if broker_before is not None and broker_after is not None:
            # Over the load's producing span (the load process's start-up, when the broker is
            # nearly idle, would read low in a 3 s phase).
            result.broker_cpu = (broker_after - broker_before) / load["span"]
        # Wait for the steady phase to come out (an implementation that fell behind gets
        # as long again as the phase took, plus 10 s).
        measured = lambda: sum(1 for k in measurer.arrived if k[0] == "m")  # noqa: E731
        await until(lambda: measured() >= result.produced, proc, seconds + 10)
        cpu_after = throughput._cpu_seconds(proc.pid)
        if cpu_before is not None and cpu_after is not None and result.produced:
            result.cpu_us = (cpu_after - cpu_before) / result.produced * 1e6
        lat = sorted(
            (measurer.arrived[k] - measurer.sent[k]) * 1000 for k in measurer.arrived if k[0] == "m"
        )
        result.delivered = len(lat)
        result.duplicates = measurer.duplicates
        result.p99_by_window = p99_by_window(measurer, seconds)
        if lat:
            result.p50_ms = percentile(lat, 0.50)
            result.p99_ms = percentile(lat, 0.99)
            result.max_ms = lat[-1]
        if hop is not None:
            await hop.stop()
            result.extra.update(hop_stats(hop, measurer))
        if result.delivered < result.produced:
            result.problem = f"{result.produced - result.delivered:,} orders not out in time"
        result.ok = result.delivered == result.produced
        return result
    finally:
        await throughput._stop(proc)
        await measurer.stop()
        if hop is not None:
            await hop.stop()


def p99_by_window(out: Measurer, seconds: float, width: float = 4.0) -> list[float]:
    """p99 latency (ms) of the steady phase's delivered orders in each `width` seconds by `sent`
    (the phase's last moments go to its last window, not to a window of a few orders)."""
    sent = [
        (out.sent[k], (out.arrived[k] - out.sent[k]) * 1000) for k in out.arrived if k[0] == "m"
    ]
    if not sent:
        return []
    first = min(s for s, _ in sent)
    last = max(1, round(seconds / width)) - 1
    windows: dict[int, list[float]] = {}
    for s, ms in sent:
        windows.setdefault(min(last, int((s - first) // width)), []).append(ms)
    return [percentile(sorted(windows[w]), 0.99) for w in sorted(windows)]


def repartition_topic(impl: str, group: str) -> str:
    """The rekey pipeline's repartition topic, as streamc or the raw loop names it."""
    if impl == "streamc":
        return f"{group}-rekey-orders-account_id-repartition"
    return f"{group}-account_id-repartition"  # peers/lat_raw.py


def hop_stats(hop: Measurer, out: Measurer) -> dict[str, Any]:
    """p50/p99 of each hop of the steady phase's orders: in (produced to the repartition
    topic) and back (from the repartition topic to the output)."""
    ids = [k for k in out.arrived if k[0] == "m" and k in hop.arrived]
    if not ids:
        return {}
    first = sorted((hop.arrived[k] - out.sent[k]) * 1000 for k in ids)
    second = sorted((out.arrived[k] - hop.arrived[k]) * 1000 for k in ids)
    return {
        "hop_in_p50_ms": percentile(first, 0.5),
        "hop_in_p99_ms": percentile(first, 0.99),
        "hop_back_p50_ms": percentile(second, 0.5),
        "hop_back_p99_ms": percentile(second, 0.99),
    }


async def skew_run(impl: str, per_partition: int, run_id: str, rundir: Path) -> SkewResult:
    result = SkewResult(impl, per_partition)
    tag = f"{impl.replace('-', '_')}_skew_{run_id}"
    topic, out = f"lat-{tag}", f"lat-{tag}-out"
    await create_topics(BOOTSTRAP[0], {topic: PARTITIONS, out: 1})
    await produce_backlog(BOOTSTRAP[0], topic, per_partition)
    measurer = Measurer(BOOTSTRAP[0], out, 1)
    await measurer.start()
    log = rundir / f"{tag}.log"
    result.log = str(log)
    proc = await start_process(launch(impl, "copy", tag, topic, out, rundir), log, rundir)
    try:
        total = PARTITIONS * per_partition
        if not await until(lambda: len(measurer.order) >= total, proc, 120 + total / 1000):
            result.problem = f"{len(measurer.order):,} of {total:,} orders out"
            return result
        result.skew, result.all_touched = worst_skew(measurer.order, per_partition)
        result.ok = True
        return result
    finally:
        await throughput._stop(proc)
        await measurer.stop()


# -- main ------------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return f"{v:9.1f}" if v is not None else f"{'-':>9}"


def _us(v: float | None) -> str:
    return f"{v:7.1f}" if v is not None else f"{'-':>7}"


def _pct(v: float | None) -> str:
    return f"{v:6.0%}" if v is not None else f"{'-':>6}"


def windows_line(r: LatencyResult) -> str:
    return f"  p99 ms by 4 s of {r.impl} {r.pipeline} {r.rate:,}/s: " + " ".join(
        f"{v:.0f}" for v in r.p99_by_window
    )


def report(lat: list[LatencyResult], skews: list[SkewResult]) -> str:
    lines = [
        f"{'pipeline':8} {'rate/s':>7} {'implementation':14} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'max ms':>9} {'CPU us':>7} {'broker':>6} {'delivered':>12}",
    ]
    lines.append("-" * len(lines[0]))
    for r in lat:
        lines.append(
            f"{r.pipeline:8} {r.rate:7,} {r.impl:14} {_ms(r.p50_ms)} {_ms(r.p99_ms)} "
            f"{_ms(r.max_ms)} {_us(r.cpu_us)} {_pct(r.broker_cpu)} "
            f"{r.delivered:>6,}/{r.produced:<6,}"
            + (f"  {r.problem.splitlines()[0]}" if r.problem else "")
            + (
                f"  hops p50/p99: in {r.extra['hop_in_p50_ms']:.1f}/{r.extra['hop_in_p99_ms']:.1f}"
                f" back {r.extra['hop_back_p50_ms']:.1f}/{r.extra['hop_back_p99_ms']:.1f}"
                if "hop_in_p50_ms" in r.extra
                else ""
            )
        )
    if any(r.p99_by_window for r in lat):
        lines += ["", *(windows_line(r) for r in lat if r.p99_by_window)]
    if skews:
        lines += [
            "",
            f"{'skew over a backlog':20} {'per partition':>13} {'skew':>7} {'all touched':>12}",
        ]
        for s in skews:
            lines.append(
                f"{s.impl:20} {s.per_partition:13,} "
                + (f"{s.skew:7,} {s.all_touched:12,}" if s.ok else f"  FAILED {s.problem}")
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, run_id: str, rundir: Path) -> dict[str, Any]:
    print(
        f"run {run_id}: {args.seconds:g} s per rate in {args.tick_ms:g} ms ticks, logs in {rundir}",
        flush=True,
    )
    throughput.precompile(HERE / "peers", Path(streamc_runtime.__file__).parent)
    lat: list[LatencyResult] = []
    skews: list[SkewResult] = []
    async with throughput.tansu(rundir / "tansu.log") as bootstrap:
        BOOTSTRAP[:] = [bootstrap]
        BROKER_PID[:] = [broker_pid(bootstrap)]
        for pipeline in args.pipeline:
            for rate in args.rate:
                for impl in args.impl:
                    r = await latency_run(
                        pipeline, rate, impl, args.seconds, args.tick_ms, run_id, rundir
                    )
                    lat.append(r)
                    print(report([r], []).splitlines()[2], flush=True)
        if args.backlog:
            for impl in args.impl:
                s = await skew_run(impl, args.backlog, run_id, rundir)
                skews.append(s)
                print(report([], [s]).splitlines()[-1], flush=True)
    load = os.getloadavg()
    text = report(lat, skews)
    print(
        f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
        f"{os.cpu_count()} CPUs\n{text}"
    )
    return {
        "run_id": run_id,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": args.seconds,
        "tick_ms": args.tick_ms,
        "loadavg": load,
        "latency": [asdict(r) for r in lat],
        "skew": [asdict(s) for s in skews],
        "table": text,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_generate"]:  # the load process (see latency_run)
        bootstrap, topic, rate, seconds, tick = argv[1:6]
        n, span = asyncio.run(
            generate(bootstrap, topic, float(rate), float(seconds), float(tick), "m")
        )
        print(json.dumps({"produced": n, "span": span}), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per rate, a 4 x 2,500 backlog")
    parser.add_argument("--seconds", type=float, help="steady phase per rate (default 20)")
    parser.add_argument("--rate", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument(
        "--tick-ms", type=float, default=5.0, help="the load's batch interval (default 5 ms)"
    )
    parser.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--pipeline", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    parser.add_argument(
        "--backlog", type=int, help="orders per partition for the skew runs (0: none)"
    )
    parser.add_argument("--out", help="folder for logs, builds and results.json")
    args = parser.parse_args(argv)
    if args.tick_ms <= 0:
        parser.error("--tick-ms must be above 0")
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 20.0
    if args.backlog is None:
        args.backlog = 2_500 if args.quick else 25_000
    run_id = uuid.uuid4().hex[:6]
    rundir = Path(args.out or f"/tmp/streamc-latency-{run_id}").resolve()
    rundir.mkdir(parents=True, exist_ok=True)
    report_ = asyncio.run(main_async(args, run_id, rundir))
    (rundir / "results.json").write_text(json.dumps(report_, indent=1))
    ok = all(r["ok"] for r in report_["latency"]) and all(s["ok"] for s in report_["skew"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
