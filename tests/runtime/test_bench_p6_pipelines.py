"""The P6 benchmark's streamc pipelines (bench/kafka/pipelines/p6*.sdl, built as the harness
builds them) give every order its account's latest tier, and their `done` report is what the
harness's check expects; a wrong tier changes the report."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from streamc_runtime.local import run_local

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "kafka"))
import run as bench

N = 2_000


def _app_and_hooks(tmp_path: Path, variant: str, data: Any) -> tuple[Any, Any]:
    group = f"p6_{variant or 'global'}"
    folder = bench.build_streamc("p6", group, data, tmp_path, variant)
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module(f"{group}_worker.agents")
        hooks = importlib.import_module(f"{group}_worker.hooks.hooks")
        return importlib.import_module(f"{group}_worker.app").app, hooks
    finally:
        sys.path.remove(str(folder))


@pytest.mark.parametrize("variant", ["", "copartitioned"], ids=["global", "co-partitioned"])
async def test_p6_pipeline_reports_the_tiers_and_digest_the_harness_expects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    orders, total = bench.orders(N, bench.P6_ACCOUNTS)
    accounts = bench.p6_accounts()
    tiers, digest = bench.p6_expected(orders, accounts)
    data = bench.Dataset("orders6-in", N, {}, total, 0, {}, "accounts-in", len(accounts))
    app, hooks = _app_and_hooks(tmp_path, variant, data)
    said: list[dict[str, Any]] = []
    monkeypatch.setattr(hooks, "_N", N)
    # Kept after the test: the hooks report their count at exit, not onto the test's stdout.
    hooks._say = lambda event, **fields: said.append({"ev": event, **fields})

    def lines(records: list[tuple[bytes, bytes]], start: int) -> list[dict[str, Any]]:
        return [
            {"key": k.decode(), "value": json.loads(v), "timestamp": start + i, "partition": None}
            for i, (k, v) in enumerate(records)
        ]

    account_lines = lines(accounts, 0)
    for line in account_lines:
        del line["partition"]  # keyed: Kafka's partitioner places them, as in the harness
    order_lines = lines(orders, 100_000)
    for i, line in enumerate(order_lines):
        line["partition"] = i % 4  # round robin, as the harness produces them
    await run_local(app, [("orders6-in", order_lines), ("accounts-in", account_lines)])
    [done] = [e for e in said if e["ev"] == "done"]
    # What the harness compares, after the report's JSON round trip (a None key is "null").
    report = json.loads(json.dumps(done))
    assert (report["count"], report["tiers"], report["digest"]) == (N, tiers, digest)
    assert report["total"] == pytest.approx(total)
    # The first 1,000 accounts' earlier records, had a join kept them, would show.
    assert bench.p6_expected(orders, accounts[: bench.P6_ACCOUNTS])[1] != digest
