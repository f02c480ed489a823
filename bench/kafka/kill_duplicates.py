"""Duplicates after a SIGKILL: how much work a killed worker's successor repeats.

    .venv/bin/python bench/kafka/kill_duplicates.py [--delays 1 3 5] [--runtime DIR]

For each delay: a fresh Tansu broker, a backlog of 4 x N orders, and the slow copier of
tests/kafka/apps/progress.sdl (a millisecond per order, commit interval 3 s, the default) as a
worker process; it is SIGKILLed `delay` seconds after it logs its assignment, then a second
worker handles the rest. Prints, per delay, what the first worker had committed and how many
orders reached the output twice. `--runtime DIR` runs the workers on another copy of
streamc_runtime (DIR is put first on their PYTHONPATH), e.g. an older commit's `runtime/`
(`git archive <commit> runtime | tar -x -C /tmp/old`), to compare before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "kafka"))
import tansu_broker  # noqa: E402
from kafkatest import Broker  # noqa: E402
from workers import Worker, build, committed, produce, read_topic  # noqa: E402

APP = REPO / "tests" / "kafka" / "apps" / "progress.sdl"


async def one(build_dir: Path, delay: float, per_partition: int, tmp: Path) -> dict[str, object]:
    proc, port = await tansu_broker.start(tmp / f"broker-{delay}.log")
    broker = Broker("127.0.0.1", port, proc.pid, tmp / f"broker-{delay}.log")
    try:
        for p in range(4):
            orders = [
                (f"o{p}-{i}".encode(), json.dumps({"id": f"o{p}-{i}", "source": p}).encode())
                for i in range(per_partition)
            ]
            await produce(broker, "orders", orders, partition=p)
        log = tmp / f"worker-{delay}.log"
        args = ("--commit-interval", "3", "--log-level", "INFO")
        first = Worker(build_dir.name, build_dir, broker, log, args=args).start()
        try:
            while "assigned partitions" not in first.text():
                if not first.alive:
                    raise SystemExit(first.tail())
                await asyncio.sleep(0.01)
            await asyncio.sleep(delay)
            first.signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.stop()
        done = await committed(broker, "progress", "orders", 4)
        copied_by_first = len(await read_topic(broker, "copied", lambda rs: True, settle=0.5))
        second = Worker(build_dir.name, build_dir, broker, log, args=args).start()
        total = 4 * per_partition
        try:
            out = await read_topic(
                broker,
                "copied",
                lambda rs: len({r.value for r in rs}) >= total,
                within=120 + total / 500,
            )
        finally:
            second.stop()
        ids = Counter(json.loads(r.value or b"{}")["id"] for r in out)
        return {
            "delay_s": delay,
            "committed_by_first": sum(done.values()),
            "copied_by_first": copied_by_first,
            "duplicates": sum(n - 1 for n in ids.values()),
            "missing": total - len(ids),
        }
    finally:
        tansu_broker.stop(proc)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="streamc-kill-") as folder:
        tmp = Path(args.keep or folder)
        tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any I/O
        build_dir = build(APP, tmp / "progress_worker")
        print(f"{'kill after assignment':>22} {'committed':>10} {'copied':>8} {'duplicates':>11}")
        for delay in args.delays:
            r = await one(build_dir, delay, args.n, tmp)
            print(
                f"{delay:21.1f}s {r['committed_by_first']:10,} {r['copied_by_first']:8,} "
                f"{r['duplicates']:11,}" + (f"  MISSING {r['missing']}" if r["missing"] else ""),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--delays", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    parser.add_argument("--n", type=int, default=5000, help="orders per partition")
    parser.add_argument("--keep", help="a folder to keep the logs in")
    parser.add_argument("--runtime", help="a streamc_runtime folder's parent to run instead")
    args = parser.parse_args()
    if args.runtime:  # the workers inherit it
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(args.runtime).resolve()), os.environ.get("PYTHONPATH")])
        )
    started = time.time()
    asyncio.run(main_async(args))
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
