"""The P4 benchmark's streamc worker (bench/kafka/pipelines/p4_worker/, written as STATE.md
section 2 says generated code looks) counts and sums exactly on the memory broker, and the
harness's check of the table a process reports names every wrong account."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from rtkit import Running

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "kafka"))
import run as bench


def _worker_app(tmp_path: Path, group: str, topic: str) -> Any:
    folder = bench.hand_written_p4(group, topic, tmp_path)
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module(f"{group}_worker.agents")
        # The hooks report to the harness on stdout (and at exit): not from a test.
        importlib.import_module(f"{group}_worker.hooks.hooks")._say = lambda *a, **k: None
        return importlib.import_module(f"{group}_worker.app").app
    finally:
        sys.path.remove(str(folder))


async def test_hand_written_p4_worker_tables_each_accounts_count_and_sum(tmp_path: Path) -> None:
    app = _worker_app(tmp_path, "p4_check", "orders-in")
    assert app.name == "p4_check"
    assert set(app.topics) >= {"orders-in", "p4_check-totals-orders-account_id-repartition"}
    records, _total = bench.orders(2_000)
    async with Running(app) as r:
        for i, (key, value) in enumerate(records):
            r.produce("orders-in", value, key=key, partition=i % 4, raw=True)
        await r.idle()
        rows = r.worker.table("totals_by_account")
    table = {account: (row.orders, row.amount) for account, row in rows.items()}
    assert bench.table_problems(table, bench.per_account(records)) == []
    # One changelog record per order, after the repartition.
    changelog = [
        m for m in r.messages("p4_check-totals_by_account-changelog") if m.key[:1] != b"\0"
    ]
    assert len(changelog) == len(records)


def test_table_check_names_wrong_missing_and_extra_accounts() -> None:
    want = {"a": (2, 3.5), "b": (1, 1.25), "c": (4, 10.0)}
    assert bench.table_problems({"a": [2, 3.5], "b": [1, 1.25], "c": [4, 10.0]}, want) == []
    assert bench.table_problems(None, want) == ["no table reported at `done`"]
    [problem] = bench.table_problems({"a": [3, 3.5], "b": [1, 1.26], "d": [1, 1.0]}, want)
    assert problem.startswith("table wrong for 4 of 3 accounts: a: [3, 3.5] (want (2, 3.5)); ")
    assert "b: [1, 1.26] (want (1, 1.25))" in problem
    assert "c: None (want (4, 10.0))" in problem
