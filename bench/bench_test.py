"""`streamc test` speed: many cases over the sample, and one case including start-up.

    python bench/bench_test.py [--cases N]

Writes a test file of N cases (default 200, the sample's own cases repeated under new names)
beside a copy of samples/orders.sdl in a temporary folder, then times `streamc test` on it in
a fresh process (start-up, checking, building the package once, and every case), and one
case alone the same way. Targets (issue 15): 200 cases in under 10 s, one case in under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def timed(folder: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "streamc.cli", "test", str(folder), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"streamc test failed:\n{done.stdout}{done.stderr}")
    return seconds, done.stdout.splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()
    sample = yaml.safe_load((SAMPLES / "orders.test.yaml").read_text(encoding="utf-8"))
    base = sample["cases"]
    with tempfile.TemporaryDirectory(prefix="bench-test-") as tmp:
        folder = Path(tmp)
        for name in ("orders.sdl", "hooks.py"):
            shutil.copy(SAMPLES / name, folder / name)
        cases = [
            {**base[i % len(base)], "name": f"{base[i % len(base)]['name']} #{i}"}
            for i in range(args.cases)
        ]
        test_file = folder / "orders.test.yaml"
        test_file.write_text(yaml.safe_dump({"cases": cases}, sort_keys=False), encoding="utf-8")
        many, summary = timed(folder)
        print(
            f"{args.cases} cases:          {many:6.2f} s  ({summary}; "
            f"{many / args.cases * 1000:.1f} ms a case including start-up)"
        )
        one, summary = timed(folder, "-k", f"{base[0]['name']} #0")
        print(f"one case, with start-up: {one:6.2f} s  ({summary})")


if __name__ == "__main__":
    main()
