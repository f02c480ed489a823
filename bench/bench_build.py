"""How long `streamc build` takes, as a user runs it (a fresh interpreter each time).

    python bench/bench_build.py [--quick]

Prints the wall time of `streamc build samples/orders.sdl` (target: under 1.5 s including
interpreter start) and of a synthetic program with 1,000 agents and 200 records (target: under
10 s), each the median of a few runs, and the ratio of each to a bare `python -c pass` start.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from programs import big_program

REPO = Path(__file__).resolve().parents[1]


def wall(args: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds (the command and its children; CPU time is what a loaded
    machine inflates least)."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one run each, 200 agents")
    options = parser.parse_args()
    runs = 1 if options.quick else 5
    agents = 200 if options.quick else 1000
    streamc = [sys.executable, "-m", "streamc.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sdl, hooks = big_program(agents=agents, records=200)
        (folder / "big.sdl").write_text(sdl)
        (folder / "hooks.py").write_text(hooks)
        bare = wall([sys.executable, "-c", "pass"], runs)
        sample = wall([*streamc, "build", str(REPO / "samples/orders.sdl"), "-o", tmp + "/o"], runs)
        big = wall(
            [*streamc, "build", str(folder / "big.sdl"), "-o", tmp + "/b"], max(1, runs // 2)
        )
    print(f"{'what':44} {'wall s':>8} {'CPU s':>8} {'wall x python start':>20}")
    rows = [
        ("python -c pass", bare),
        ("streamc build samples/orders.sdl", sample),
        (f"streamc build ({agents} agents, 200 records)", big),
    ]
    for label, (seconds, cpu) in rows:
        print(f"{label:44} {seconds:8.3f} {cpu:8.3f} {seconds / bare[0]:20.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
