"""The P5 benchmark (bench/kafka/pipelines/p5.sdl, built as the harness builds it) counts and
sums every (account, minute) of the orders exactly on the memory broker, windows close as
stream time passes them plus the grace, and the harness's expected windows follow the orders'
timestamps."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

from rtkit import Running

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "kafka"))
import run as bench


def test_order_timestamps_start_on_a_minute_and_are_step_ms_apart() -> None:
    stamps = bench.timestamps(3_000)
    assert stamps[0] % 60_000 == 0
    assert {b - a for a, b in itertools.pairwise(stamps)} == {bench.STEP_MS}
    records = [(b"k", b'{"account_id":"a","amount":1.5}')] * 3
    assert bench.per_account_minute(records, [0, 59_999, 60_000]) == {
        "a@0": (2, 3.0),
        "a@60000": (1, 1.5),
    }


async def test_p5_worker_reports_every_accounts_every_minute_exactly(tmp_path: Path) -> None:
    data = bench.Dataset("orders-in", 0, {}, 0.0, 0, {})
    folder = bench.build_streamc("p5", "p5_check", data, tmp_path)
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module("p5_check_worker.agents")
        hooks = importlib.import_module("p5_check_worker.hooks.hooks")
        hooks._say = lambda *a, **k: None  # it reports to the harness on stdout
        app = importlib.import_module("p5_check_worker.app").app
    finally:
        sys.path.remove(str(folder))
    n = 90_000  # 90 minutes: the first 29 minutes' windows close (grace 60 minutes)
    records, _total = bench.orders(n)
    stamps = bench.timestamps(n)
    async with Running(app) as r:
        for i, (key, value) in enumerate(records):
            r.broker.produce("orders-in", value, key, (), i % 4, stamps[i])
        await r.idle(timeout=300)  # 90,000 orders: minutes on a busy machine
        open_windows = r.worker.table("minutes_by_account")
    reported = {
        f"{account}@{int(start.timestamp() * 1000)}": v
        for (account, start), v in hooks._windows.items()
    }
    want = bench.per_account_minute(records, stamps)
    assert bench.table_problems(reported, want, "windows") == []
    assert hooks._count == n  # one row per order: nothing late
    # each table partition's stream time is within a second of the last order's: the windows
    # that ended an hour (the grace) and a minute before it are closed, the last hour's open
    last, hour = stamps[-1], 3_600_000
    opened = {f"{key}@{w.start_ms}" for key, w in open_windows}
    assert opened <= set(want)
    assert {
        w for w in want if int(w.split("@")[1]) + 60_000 + hour <= last - 60_000
    } & opened == set()
    assert {w for w in want if int(w.split("@")[1]) + 60_000 + hour > last} <= opened
    assert len(want) - len(opened) > len(want) // 4  # 29 of the 90 minutes closed in the run
