"""`streamc run --timestamps` shows what forwarding keeps: each forwarded message has its input's
timestamp (a `take` batch the latest of its members'), and a value no hook touched keeps the
producer's fields, undeclared ones included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streamc.cli import main

SDL = """\
app fidelity

record Order {
    id: str
    account_id: str
    currency: str = "EUR"
}

topic orders: Order key str partitions 2
topic copies: Order key str partitions 2
topic batches: list[Order] key str partitions 2

agent copy =
    from orders
    | where currency == "EUR"
    | echo "orders.echoed"
    | through copies
    | to "orders.copied"

agent batch = from orders | group_by account_id | take 10 within 5s | to batches
"""

# Out of order in time, as inputs may be; "v2" is a field the record does not declare.
INPUTS = [
    {"key": f"o{i}", "value": {"id": f"o{i}", "account_id": "a", "v2": i}, "timestamp": ts}
    for i, ts in ((1, 1_700_000_005_000), (2, 1_700_000_001_000), (3, 1_700_000_003_000))
]


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], topic: str) -> list[dict[str, Any]]:
    sdl = tmp_path / "fidelity.sdl"
    sdl.write_text(SDL)
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(json.dumps(line) + "\n" for line in INPUTS))
    argv = ["run", str(sdl), "--input", f"orders={orders}", "--output", f"{topic}=-"]
    assert main([*argv, "--timestamps"]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("topic", ["orders.echoed", "copies", "orders.copied"])
def test_run_shows_forwarded_messages_with_their_inputs_timestamp_and_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], topic: str
) -> None:
    lines = _run(tmp_path, capsys, topic)
    got = sorted((line["key"], line["timestamp"], line["value"]) for line in lines)
    assert got == [(i["key"], i["timestamp"], i["value"]) for i in INPUTS]


def test_run_shows_a_batch_with_the_latest_timestamp_of_its_members(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _run(tmp_path, capsys, "batches")
    got = [(ln["key"], ln["timestamp"], sorted(o["id"] for o in ln["value"])) for ln in lines]
    assert got == [("a", 1_700_000_005_000, ["o1", "o2", "o3"])]
    # a batch is written from its records: declared defaults in, undeclared fields out
    assert all(o["currency"] == "EUR" and "v2" not in o for line in lines for o in line["value"])
