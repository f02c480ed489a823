"""The streamc command line: exit codes, build --check, run's output, graph."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path, PurePosixPath

import pytest
from streamc.cli import Failure, _inside, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "orders.sdl"
ORDERS = REPO / "samples" / "orders.jsonl"


def test_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SAMPLE)]) == 0
    bad = tmp_path / "bad.sdl"
    bad.write_text("app x\nrecord A { n: nit }\n")
    assert main(["check", str(bad)]) == 1
    assert "error[E2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["check"])
    assert usage.value.code == 2


def test_build_twice_is_byte_identical_and_check_agrees(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["build", str(SAMPLE), "-o", str(first)]) == 0
    assert main(["build", str(SAMPLE), "-o", str(second)]) == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    assert main(["build", str(SAMPLE), "-o", str(first), "--check"]) == 0


def test_build_check_finds_edits_and_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["build", str(SAMPLE), "-o", str(out), "--check"]) == 1  # missing
    assert main(["build", str(SAMPLE), "-o", str(out)]) == 0
    agent = out / "orders_worker" / "agents" / "totals.py"
    agent.write_text(agent.read_text() + "# edited\n")
    assert main(["build", str(SAMPLE), "-o", str(out), "--check"]) == 1
    assert main(["build", str(SAMPLE), "-o", str(out)]) == 0
    leftover = out / "orders_worker" / "agents" / "renamed.py"
    leftover.write_text("")
    assert main(["build", str(SAMPLE), "-o", str(out), "--check"]) == 1
    assert main(["build", str(SAMPLE), "-o", str(out)]) == 0
    assert not leftover.exists()  # a stale agent module would still register itself


def test_never_writes_outside_the_output_folder(tmp_path: Path) -> None:
    for escaping in ("../x.py", "/etc/x.py", "a/../../x.py"):
        with pytest.raises(Failure):
            _inside(tmp_path, PurePosixPath(escaping))
    assert _inside(tmp_path, PurePosixPath("pkg/a.py")) == (tmp_path / "pkg" / "a.py").resolve()


def test_run_prints_the_expected_batches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SAMPLE), "--input", f"orders={ORDERS}", "--output", "totals=-"]) == 0
    out = capsys.readouterr().out
    batches = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    inputs = [json.loads(line) for line in ORDERS.read_text().splitlines()]
    assert batches and all(b["topic"] == "totals" for b in batches)
    assert all(1 <= len(b["value"]) <= 100 for b in batches)
    # Every order reaches a batch exactly once on the in-memory broker (nothing lost or doubled).
    seen = Counter(order["id"] for b in batches for order in b["value"])
    assert seen == Counter(line["value"]["id"] for line in inputs)
    # A batch mixes partitions, but one account's orders share a partition of the repartition
    # topic, so within a batch they keep their order of arrival.
    for batch in batches:
        by_account: dict[str, list[str]] = {}
        for order in batch["value"]:
            by_account.setdefault(order["account_id"], []).append(order["id"])
        assert all(ids == sorted(ids) for ids in by_account.values())


def test_run_reports_bad_usage_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"value": 1\n')
    misplaced = tmp_path / "misplaced.jsonl"
    misplaced.write_text('{"value": {}, "partition": 9}\n')
    cases = {
        ("--input", f"orders={misplaced}"): (1, "partition 9 out of range"),
        ("--input", "ordrs=x.jsonl"): (2, "did you mean 'orders'"),
        ("--input", "orders"): (2, "TOPIC=FILE"),
        ("--input", f"orders={bad}"): (1, "bad.jsonl:1: invalid JSON"),
        ("--input", "orders=/nonexistent.jsonl"): (1, "cannot read"),
    }
    for args, (status, message) in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "streamc.cli", "run", str(SAMPLE), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == status, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_graph_names_every_topic_stably(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(SAMPLE)]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR")
    for name in ("orders-totals-orders-account_id-repartition", "orders-dlq", "audit.orders.v1"):
        assert name in mermaid
    assert main(["graph", str(SAMPLE), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "orders"') and "agent_totals_2" in dot
    assert main(["graph", str(SAMPLE)]) == 0
    assert capsys.readouterr().out == mermaid


def test_console_script_is_installed() -> None:
    assert shutil.which("streamc", path=str(Path(sys.executable).parent))


def test_unwritable_output_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["build", str(SAMPLE), "-o", str(blocker)]) == 1
    assert main(["build", str(SAMPLE), "-o", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "internal error" not in err


def _shop_with_helpers(folder: Path) -> Path:
    """A project whose hooks import a local module, which imports another one."""
    (folder / "shop.sdl").write_text(
        "app shop\n"
        "record Order { id: str  amount: float }\n"
        "topic orders: Order key str\n"
        'hooks "hooks.py" {\n    is_big(Order) -> bool\n    show(Order)\n}\n'
        "agent big = from orders | filter is_big | sink show\n"
    )
    (folder / "hooks.py").write_text(
        "import shop_format\nfrom shop_limits import LIMIT\n\n\n"
        "def is_big(order) -> bool:\n    return order.amount > LIMIT\n\n\n"
        "def show(order) -> None:\n    print(shop_format.line(order))\n"
    )
    (folder / "shop_format.py").write_text(
        "from shop_limits import LIMIT\n\n\n"
        "def line(order) -> str:\n    return f'big order {order.id}: {order.amount} > {LIMIT}'\n"
    )
    (folder / "shop_limits.py").write_text("LIMIT = 100.0\n")
    (folder / "orders.jsonl").write_text(
        '{"key": "a", "value": {"id": "o1", "amount": 50}}\n'
        '{"key": "a", "value": {"id": "o2", "amount": 500}}\n'
    )
    return folder / "shop.sdl"


def test_build_ships_the_local_modules_the_hooks_import(tmp_path: Path) -> None:
    sdl = _shop_with_helpers(tmp_path)
    assert main(["build", str(sdl), "-o", str(tmp_path / "out")]) == 0
    local = tmp_path / "out" / "shop_worker" / "hooks" / "_local"
    assert sorted(p.name for p in local.iterdir()) == ["shop_format.py", "shop_limits.py"]
    assert (local / "shop_limits.py").read_text() == "LIMIT = 100.0\n"


def test_run_imports_the_local_modules_the_hooks_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sdl = _shop_with_helpers(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the worker adds its _local folder
    try:
        assert main(["run", str(sdl), "--input", f"orders={tmp_path / 'orders.jsonl'}"]) == 0
    finally:
        for name in ("shop_format", "shop_limits"):
            sys.modules.pop(name, None)
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("big order")] == [
        "big order o2: 500.0 > 100.0"
    ]
