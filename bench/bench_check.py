"""How long parse + check take on a big program: 1,000 agents over 200 records.

    .venv/bin/python bench/bench_check.py [--agents N] [--records N] [--repeat N] [--large]

Prints the size of the generated source and the best time of each stage over the repeats.
The target is under one second for the default size; no test asserts on time.

`--large` also runs, each in a fresh interpreter so its peak memory is its own, the sizes a
generated program can reach: 10 MB of agents (121,561 of them; target under 15 s and under
400 MB peak RSS) and one 5 MB string literal (target under 1 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streamc import ast, ir
from streamc.checker import check
from streamc.parser import _lark, parse

HOOKS = "def enrich(x):\n    return x\n\nasync def big(x):\n    return True\n"


def generate(agents: int, records: int) -> str:
    """A realistic mix: nested records, every operation, joins, strings and hooks."""
    out = ["app bench\n"]
    for i in range(records):
        nested = f"\n    parent: R{i - 1}?" if i else ""
        out.append(
            f"record R{i} {{\n    id: str\n    account_id: str\n    amount: float\n"
            f"    count: int = 0\n    language: str? = null\n    tags: list[str] = []{nested}\n}}\n"
        )
        out.append(f"topic t{i}: R{i} key str partitions 4\n")
        out.append(f"topic u{i}: R{i} key str partitions 4\n")
        out.append(f"topic batches{i}: list[R{i}] key str partitions 4\n")
    out.append('hooks "hooks.py" {\n    enrich(any) -> R0\n    big(R0) -> bool\n}\n')
    shapes = [
        "from t{r} | group_by account_id | take 100 within 10s | through batches{r}",
        "from t{r} & u{r} | where amount > 10 and language != null and not (count == 0) "
        '| echo u{r}, "copy-{i}" | enumerate 1',
        'from t{r} | where amount * 2 >= count + 1.5 or id == "x" | items',
        "from t0 | process enrich | filter big | group_by id | events",
        "from t{r} | take 10 | to batches{r}",
    ]
    for i in range(agents):
        r = i % records
        out.append(f"agent a{i} = " + shapes[i % len(shapes)].format(r=r, i=i) + "\n")
    return "".join(out)


def best(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU time over the repeats (CPU time is steadier on a busy
    machine), and the last result."""
    walls, cpus = [], []
    result: object = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


LARGE_AGENTS = 121_561  # with 200 records: 10 MB of source


def literal_program(size: int) -> str:
    """One `where` comparing with a string literal of `size` characters, escapes included."""
    chunk = 'abcdefghij\\"klmnopqrstuvwxyz0123456789 '
    body = (chunk * (size // len(chunk) + 1))[:size]
    body = body[:-1] if body.endswith("\\") else body
    return (
        "app bench\nrecord R { id: str }\ntopic t: R key str\n"
        f'agent a = from t | where id == "{body}" | to "out"\n'
    )


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss also counts the parent's at the fork, so the
    kernel's own high-water mark for this process's memory is read where there is one."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str) -> dict[str, float]:
    """Parse and check the program at `path` in this process, as `streamc check` would:
    seconds and peak RSS in MB (so that generating the program is not counted)."""
    text = Path(path).read_bytes().decode("utf-8")  # as the loader reads it
    _lark()
    before = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    module = parse(text, "bench.sdl")
    parsed_wall, parsed_cpu = time.perf_counter(), time.process_time()
    program = check(module, {"hooks.py": HOOKS}).program
    assert isinstance(program, ir.Program), "the benchmark's program must check clean"
    return {
        "mb": len(text.encode()) / 1e6,
        "parse_wall": parsed_wall - wall,
        "parse_cpu": parsed_cpu - cpu,
        "check_wall": time.perf_counter() - parsed_wall,
        "check_cpu": time.process_time() - parsed_cpu,
        "rss_before": before,
        "rss_peak": peak_rss_mb(),
    }


def large() -> None:
    targets = {"agents": "target < 15 s, < 400 MB", "literal": "target < 1 s"}
    print(f"{'':22}{'MB':>6}{'parse':>9}{'check':>9}{'total':>9}{'cpu':>9}{'peak RSS':>11}")
    for scenario, target in targets.items():
        text = generate(LARGE_AGENTS, 200) if scenario == "agents" else literal_program(5 << 20)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{scenario}.sdl"
            path.write_text(text, encoding="utf-8")
            del text
            out = subprocess.run(
                [sys.executable, str(Path(__file__)), "--measure", str(path)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        r = json.loads(out.stdout)
        total = r["parse_wall"] + r["check_wall"]
        cpu = r["parse_cpu"] + r["check_cpu"]
        print(
            f"{scenario:22}{r['mb']:6.1f}{r['parse_wall']:8.1f}s{r['check_wall']:8.1f}s"
            f"{total:8.1f}s{cpu:8.1f}s{r['rss_peak']:7.0f} MB  ({target}; "
            f"{r['rss_before']:.0f} MB before parsing)"
        )


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--agents", type=int, default=1000)
    args.add_argument("--records", type=int, default=200)
    args.add_argument("--repeat", type=int, default=5)
    args.add_argument("--large", action="store_true", help="also the 10 MB and 5 MB programs")
    args.add_argument("--measure", metavar="FILE.sdl", help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.measure:
        print(json.dumps(measure(opts.measure)))
        return
    text = generate(opts.agents, opts.records)
    start = time.perf_counter()
    _lark()
    build = time.perf_counter() - start
    t_parse, c_parse, module = best(lambda: parse(text, "bench.sdl"), opts.repeat)
    assert isinstance(module, ast.Module)
    t_check, c_check, program = best(
        lambda: check(module, {"hooks.py": HOOKS}), opts.repeat
    )
    assert isinstance(program.program, ir.Program), program.diagnostics
    print(
        f"source: {opts.agents} agents, {opts.records} records, "
        f"{len(text.splitlines())} lines, {len(text) / 1024:.0f} KiB"
    )
    print(f"grammar load (once per process): {build * 1000:7.1f} ms")
    print(f"{'':33}{'wall':>7}    {'cpu':>7}")
    print(
        f"parse:                           {t_parse * 1000:7.1f} ms {c_parse * 1000:7.1f} ms"
    )
    print(
        f"check:                           {t_check * 1000:7.1f} ms {c_check * 1000:7.1f} ms"
    )
    print(
        f"parse + check:                   {(t_parse + t_check) * 1000:7.1f} ms "
        f"{(c_parse + c_check) * 1000:7.1f} ms  (target < 1000 ms; best of {opts.repeat})"
    )
    if opts.large:
        print()
        large()


if __name__ == "__main__":
    main()
