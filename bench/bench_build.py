"""How long `streamc build` takes, as a user runs it (a fresh interpreter each time).

    python bench/bench_build.py [--quick]

Prints the wall time of `streamc build samples/orders.sdl` (target: under 1.5 s including
interpreter start) and of a synthetic program with 1,000 agents and 200 records (target: under
10 s), each the median of a few runs, and the ratio of each to a bare `python -c pass` start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from programs import big_program

REPO = Path(__file__).resolve().parents[1]


def wall(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    print(f"{'what':44} {'seconds':>8} {'x python start':>15}")
    print(f"{'python -c pass':44} {bare:8.3f} {1.0:15.1f}")
    print(f"{'streamc build samples/orders.sdl':44} {sample:8.3f} {sample / bare:15.1f}")
    print(f"{f'streamc build ({agents} agents, 200 records)':44} {big:8.3f} {big / bare:15.1f}")


if __name__ == "__main__":
    main()
