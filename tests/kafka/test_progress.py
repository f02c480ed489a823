"""Progress under a backlog, on a real broker: a slow worker moves every partition forward at the
same pace, and commits its first processed batch soon, not a commit interval later.

The subject is `apps/progress.sdl`: a millisecond of work per order, each copied to a
one-partition topic in the order it was handled, so that topic is the hand-out order.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from kafkatest import Broker
from test_worker import create_topics, joined
from workers import Out, Worker, build, committed, produce, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.asyncio]

APPS = Path(__file__).parent / "apps"
PER_PARTITION = 1000


@pytest.fixture(scope="session")
def progress_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(APPS / "progress.sdl", tmp_path_factory.mktemp("progress") / "progress_worker")


async def _backlog(broker: Broker) -> None:
    """PER_PARTITION orders on each of the 4 partitions, before any worker runs."""
    await create_topics(broker, {"orders": 4})
    for p in range(4):
        orders = [
            (f"o{p}-{i}".encode(), json.dumps({"id": f"o{p}-{i}", "source": p}).encode())
            for i in range(PER_PARTITION)
        ]
        await produce(broker, "orders", orders, partition=p)


def _sources(records: Iterable[Out]) -> list[int]:
    return [json.loads(r.value or b"{}")["source"] for r in records]


def _worst_skew(sources: list[int]) -> int:
    """The largest growth of the gap between two partitions' progress, from the moment every
    partition has started until one finishes: while all four have a backlog in the worker.

    Before every partition has started, a partition's records may not have reached the
    worker at all: aiokafka looks up each partition's start position on its own, and on a
    loaded machine the first fetch can hold only some partitions. That is the client's timing,
    not the hand-out's, so it is measured apart (`_first_appearances`)."""
    counts: Counter[int] = Counter()
    worst = 0
    base: dict[int, int] | None = None
    for p in sources:
        counts[p] += 1
        if max(counts.values()) >= PER_PARTITION:
            break
        if base is None:
            if len(counts) < 4:
                continue
            base = {q: counts[q] for q in range(4)}
        done = [counts[q] - base[q] for q in range(4)]
        worst = max(worst, max(done) - min(done))
    return worst


def _first_appearances(sources: list[int]) -> int:
    """How many records were copied before the last of the four partitions first appeared."""
    seen: set[int] = set()
    for i, p in enumerate(sources):
        seen.add(p)
        if len(seen) == 4:
            return i
    return len(sources)


def _start(build_dir: Path, broker: Broker, log: Path, *args: str) -> Worker:
    return Worker(build_dir.name, build_dir, broker, log, args=args).start()


async def test_slow_worker_with_a_backlog_progresses_on_every_partition(
    fresh_broker: Broker, progress_build: Path, tmp_path: Path
) -> None:
    await _backlog(fresh_broker)
    worker = _start(progress_build, fresh_broker, tmp_path / "w.log", "--log-level", "INFO")
    try:
        out = await read_topic(
            fresh_broker, "copied", lambda rs: len(rs) >= 4 * PER_PARTITION, within=120
        )
    finally:
        worker.stop()
    sources = _sources(out)
    assert Counter(sources) == {p: PER_PARTITION for p in range(4)}
    # Every partition starts within one fetch's worth of records (the worker hands out at most
    # 500 per fetch), and from then on every partition keeps moving. The hand-out itself keeps
    # partitions within one run of each other (test_runtime_fair_handout.py pins that on the
    # memory transport); end to end on Tansu a partition can also wait for aiokafka to fetch
    # more of it, which measured up to 249 records here, so the bound is half the backlog:
    # still far below the old hand-out, which drained one partition whole (1,000).
    assert _first_appearances(sources) < 500, worker.tail()
    assert _worst_skew(sources) <= PER_PARTITION // 2, worker.tail()


async def test_worker_killed_after_its_first_processed_batch_has_committed(
    fresh_broker: Broker, progress_build: Path, tmp_path: Path
) -> None:
    await _backlog(fresh_broker)
    # A commit interval far longer than the test: only an early first commit can show up.
    worker = _start(
        progress_build, fresh_broker, tmp_path / "w.log", "--commit-interval", "60",
        "--log-level", "INFO",
    )  # fmt: skip
    try:
        await joined(worker)
        await read_topic(fresh_broker, "copied", lambda rs: len(rs) >= 1, within=60)
        got: dict[int, int] = {}
        deadline = time.monotonic() + 20  # a third of the interval
        while not sum(got.values()) and time.monotonic() < deadline:
            got = await committed(fresh_broker, "progress", "orders", 4)
        # Partitions are read one by one: the first commit may land between two reads.
        settled = await committed(fresh_broker, "progress", "orders", 4)
        while settled != got and time.monotonic() < deadline:
            got, settled = settled, await committed(fresh_broker, "progress", "orders", 4)
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.stop()
    assert sum(got.values()) > 0, worker.tail()
    after = await committed(fresh_broker, "progress", "orders", 4)
    assert after == got  # (the next commit would come an interval later)
    # Never past what was handled: every committed order was copied.
    copied = Counter(
        _sources(await read_topic(fresh_broker, "copied", lambda rs: True, settle=1.0))
    )
    assert all(after[p] <= copied[p] for p in range(4)), (after, copied)
