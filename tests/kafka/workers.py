"""Drive generated worker packages as real processes against the test broker.

The tests see a worker only from outside, as an operator would: its process, its log, the
records on Kafka and the group's committed offsets. Producing inputs and reading outputs goes
through aiokafka directly, not through the transport under test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from kafkatest import FAST_GROUP_ENV, Broker
from tansu_broker import die_with_parent

REPO = Path(__file__).resolve().parents[2]
STREAMC = Path(sys.executable).with_name("streamc")

_CHANGE = re.compile(r"(assigned partitions|partitions revoked): (.*)$")
_TP = re.compile(r"([^\s\[]+)\[([\d,]*)\]")


def build(sdl: Path, out: Path) -> Path:
    """`streamc build SDL -o OUT`; returns OUT, the folder to put on PYTHONPATH."""
    result = subprocess.run(
        [str(STREAMC), "build", str(sdl), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"streamc build {sdl} failed:\n{result.stdout}\n{result.stderr}")
    return out


@dataclass
class Worker:
    """One `python -m <package>` process with its log file."""

    package: str
    pythonpath: Path
    broker: Broker
    log: Path
    args: tuple[str, ...] = ("--commit-interval", "0.5", "--log-level", "INFO")
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {**os.environ, **FAST_GROUP_ENV, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env.pop("STREAMC_BROKER", None)
        with self.log.open("ab") as out:
            out.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.package, "--broker", self.broker.url, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, within: float = 30) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit within {within}s\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL, then reap: a crash at an arbitrary instant."""
        if self.alive:
            self.signal(signal.SIGKILL)
            self.wait(10)

    def stop(self) -> None:
        """Teardown: terminate politely, kill if it hangs; never raises."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return f"--- {self.log} ---\n" + "\n".join(self.text().splitlines()[-lines:])

    def assignment(self) -> set[tuple[str, int]]:
        """The partitions this process holds according to its log (since its latest start):
        the transport logs every assignment and every revocation."""
        text = self.text().rsplit("--- start", 1)[-1]
        held: set[tuple[str, int]] = set()
        for line in text.splitlines():
            m = _CHANGE.search(line)
            if m:
                tps = {
                    (topic, int(p))
                    for topic, ps in _TP.findall(m.group(2))
                    for p in ps.split(",")
                    if p
                }
                held = tps if m.group(1) == "assigned partitions" else held - tps
        return held


@dataclass(frozen=True)
class Out:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def produce(
    broker: Broker,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
    timestamps: Iterable[int | None] | None = None,
) -> list[tuple[int, int]]:
    """Send (key, value) records (with `timestamps`, each with its message timestamp in ms);
    returns each one's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        records = list(records)
        stamps = [None] * len(records) if timestamps is None else list(timestamps)
        futures = [
            await producer.send(topic, value, key=key, partition=partition, timestamp_ms=at)
            for (key, value), at in zip(records, stamps, strict=True)
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def read_topic(
    broker: Broker,
    topic: str,
    until: Callable[[list[Out]], bool],
    within: float = 30,
    settle: float = 0.0,
) -> list[Out]:
    """Every record of `topic` from the beginning, until `until(records)` holds (then `settle`
    seconds more, to catch what should *not* be there), or fail after `within` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    got: list[Out] = []
    try:
        deadline = time.monotonic() + within
        parts: Any = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic!r} never appeared")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        settled_at: float | None = None
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                got.extend(
                    Out(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in records
                )
            now = time.monotonic()
            if settled_at is None and until(got):
                settled_at = now
            if settled_at is not None and now - settled_at >= settle:
                return got
            if now > deadline:
                raise AssertionError(
                    f"{topic!r}: condition not met within {within}s ({len(got)} records read)"
                )
    finally:
        await consumer.stop()


async def committed(broker: Broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (0 where nothing was committed).

    Read with a consumer's `committed()`: Tansu's reply to the admin offsets call does not
    decode in aiokafka, and its end offsets are approximate (see shared/design/tansu.md).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out: dict[int, int] = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = offset or 0
        return out
    finally:
        await consumer.stop()


async def wait_committed(
    broker: Broker, group: str, topic: str, want: Mapping[int, int], within: float = 30
) -> dict[int, int]:
    """Poll until the group's committed offsets reach `want` (partition → next offset)."""
    deadline = time.monotonic() + within
    while True:
        got = await committed(broker, group, topic, max(want) + 1 if want else 0)
        if all(got.get(p, 0) >= o for p, o in want.items()):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"committed offsets of {group}/{topic}: {got}, want {dict(want)}")
        await asyncio.sleep(0.2)


def ends(deliveries: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Per partition, one past the highest offset produced (what a full commit reaches)."""
    out: dict[int, int] = {}
    for partition, offset in deliveries:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out
