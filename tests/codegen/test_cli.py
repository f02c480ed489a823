"""The streamc command line: exit codes, build --check, run's output, graph."""

from __future__ import annotations

import json
import re
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


def _project(tmp_path: Path) -> Path:
    """A copy of the sample project to edit: tmp_path/project/orders.sdl and hooks.py."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(SAMPLE, project / "orders.sdl")
    shutil.copyfile(SAMPLE.with_name("hooks.py"), project / "hooks.py")
    return project


def _rename_agent(sdl: Path, old: str, new: str) -> None:
    text = sdl.read_text()
    sdl.write_text(text.replace(f"agent {old} =", f"agent {new} =", 1))


def test_build_check_finds_edits_and_leftovers_but_not_the_users_files(tmp_path: Path) -> None:
    sdl = _project(tmp_path) / "orders.sdl"
    out = tmp_path / "out"
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 1  # missing
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    agent = out / "orders_worker" / "agents" / "totals.py"
    agent.write_text(agent.read_text() + "# edited\n")
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 1
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    assert "# edited" not in agent.read_text()  # a generated file is streamc's to rewrite
    mine = out / "orders_worker" / "agents" / "mine.py"
    mine.write_text("MINE = 1\n")
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 0
    _rename_agent(sdl, "raw", "raw_log")
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 1
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 0
    assert not (out / "orders_worker" / "agents" / "raw.py").exists()  # the last build's
    assert (out / "orders_worker" / "agents" / "raw_log.py").is_file()
    assert mine.read_text() == "MINE = 1\n"  # never the user's


def test_build_keeps_a_left_over_file_the_user_edited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdl = _project(tmp_path) / "orders.sdl"
    out = tmp_path / "out"
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    raw = out / "orders_worker" / "agents" / "raw.py"
    raw.write_text(raw.read_text() + "# my notes\n")
    _rename_agent(sdl, "raw", "raw_log")
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    assert raw.read_text().endswith("# my notes\n")
    assert f"kept {raw}: edited since streamc wrote it" in capsys.readouterr().err
    manifest = json.loads((out / ".streamc-manifest.json").read_text())
    assert "orders_worker/agents/raw.py" not in manifest["files"]  # it is the user's now
    assert "orders_worker/agents/raw_log.py" in manifest["files"]


def test_an_interrupted_build_leaves_a_manifest_the_next_build_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdl = _project(tmp_path) / "orders.sdl"
    out = tmp_path / "out"
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    _rename_agent(sdl, "raw", "raw_log")
    write_bytes = Path.write_bytes

    def fail_after_the_new_agent(self: Path, data: bytes) -> int:
        written = write_bytes(self, data)
        if self.name == "raw_log.py":
            raise OSError(28, "No space left on device", str(self))
        return written

    monkeypatch.setattr(Path, "write_bytes", fail_after_the_new_agent)
    assert main(["build", str(sdl), "-o", str(out)]) == 1
    monkeypatch.undo()
    assert main(["build", str(sdl), "-o", str(out)]) == 0  # raw_log.py is known to be streamc's
    assert not (out / "orders_worker" / "agents" / "raw.py").exists()  # and raw.py unedited
    assert main(["build", str(sdl), "-o", str(out), "--check"]) == 0


def test_build_refuses_a_non_empty_folder_without_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "orders_worker").mkdir(parents=True)
    (out / "README.md").write_text("my project\n")
    (out / "orders_worker" / "helpers.py").write_text("X = 1\n")
    assert main(["build", str(SAMPLE), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    refusal = f"refusing to build into {out}: it is not empty and holds no .streamc-manifest.json"
    assert refusal in err
    assert sorted(p.name for p in out.rglob("*")) == ["README.md", "helpers.py", "orders_worker"]
    assert (out / "README.md").read_text() == "my project\n"
    assert main(["build", str(SAMPLE), "-o", str(out), "--check"]) == 1


def test_build_never_overwrites_a_file_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdl = _project(tmp_path) / "orders.sdl"
    out = tmp_path / "out"
    assert main(["build", str(sdl), "-o", str(out)]) == 0
    mine = out / "orders_worker" / "agents" / "raw_log.py"
    mine.write_text("# mine\n")
    _rename_agent(sdl, "raw", "raw_log")  # the new build would write agents/raw_log.py
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["build", str(sdl), "-o", str(out)]) == 1
    assert f"refusing to overwrite {mine}: streamc did not write it" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("output", [".", "shop_worker", "sub/.."])
def test_build_refuses_an_output_folder_holding_its_sources(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    output: str,
) -> None:
    (tmp_path / "shop_worker").mkdir()
    (tmp_path / "sub").mkdir()
    hooks = tmp_path / "shop_worker" / "my_hooks.py"
    hooks.write_text("def show(x):\n    print(x)\n")
    (tmp_path / "shop.sdl").write_text(
        'topic t\nhooks "shop_worker/my_hooks.py" { show(bytes) }\nagent a = from t | sink show\n'
    )
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["build", "shop.sdl", "-o", output]) == 1
    err = capsys.readouterr().err
    assert f"refusing to build into {output}: it holds " in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_output_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["build", "samples/orders.sdl", "-o", str(tmp_path / "from_root")]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(SAMPLE), "-o", "from_elsewhere"]) == 0
    first, second = tmp_path / "from_root", tmp_path / "from_elsewhere"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    monkeypatch.chdir(REPO)
    assert main(["build", "samples/orders.sdl", "-o", str(second), "--check"]) == 0


def test_warnings_are_printed_and_do_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdl = tmp_path / "loop.sdl"
    sdl.write_text("topic orders_v1 key str\ntopic audit key str name \"orders.v1\"\n"
                   "agent again = from orders_v1 | to orders_v1\n")  # fmt: skip
    assert main(["check", str(sdl)]) == 0
    err = capsys.readouterr().err
    assert f"{sdl}:3:35: warning[W501]: messages written here come back to topic orders_v1: " \
        "orders_v1 → agent again → orders_v1\n" in err  # fmt: skip
    assert f"{sdl}:2:26: warning[W502]: Kafka topic 'orders.v1' collides with 'orders_v1'" in err
    assert main(["build", str(sdl), "-o", str(tmp_path / "out")]) == 0
    assert "warning[W501]" in capsys.readouterr().err


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
    # topic, so within a batch they keep their order of arrival: `streamc run` produces the
    # inputs in timestamp order (ties in file order), and some orders are a few seconds late.
    arrival = {line["value"]["id"]: n for n, line in enumerate(
        sorted(inputs, key=lambda line: line["timestamp"]))}  # fmt: skip
    assert list(arrival) != [line["value"]["id"] for line in inputs]
    for batch in batches:
        by_account: dict[str, list[int]] = {}
        for order in batch["value"]:
            by_account.setdefault(order["account_id"], []).append(arrival[order["id"]])
        assert all(ranks == sorted(ranks) for ranks in by_account.values())


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
        ("--input", f"orders={SAMPLE.with_suffix('.jsonl')}", "--table", "nosuch=x.jsonl"): (
            2,
            "--table: no table 'nosuch' (tables: accounts_by_id, minutes_by_account, "
            "totals_by_account)",
        ),
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


# -- `streamc run` never hangs silently and reports input mistakes as the user's --------------

_HOOKED_SDL = """app h
record R { n: int }
topic src: R key str partitions 1
topic dst: R key str partitions 1
hooks "hk.py" {
    slow(R) -> R
}
agent a = from src | process slow | to dst
"""

_HOOKS = """import asyncio


async def slow(r):
    if r.n == 3:
        await asyncio.Event().wait()
    await asyncio.sleep(DELAY)
    return r
"""


def _hooked(tmp_path: Path, delay: float = 0.0, prelude: str = "") -> Path:
    sdl = tmp_path / "h.sdl"
    sdl.write_text(_HOOKED_SDL)
    (tmp_path / "hk.py").write_text(prelude + _HOOKS.replace("DELAY", repr(delay)))
    (tmp_path / "in.jsonl").write_text(
        "".join(f'{{"value": {{"n": {n}}}, "key": "k{n}"}}\n' for n in (1, 2, 3, 4))
    )
    return sdl


def _streamc_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamc.cli", "run", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=60,
    )


def test_run_timeout_names_the_stuck_hook_and_keeps_what_was_written(tmp_path: Path) -> None:
    _hooked(tmp_path)
    result = _streamc_run(
        "h.sdl", "--input", "src=in.jsonl", "--output", "dst=out.jsonl", "--timeout", "1s",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert (
        "streamc run: timed out after 1s (4 records in, 2 out)\n"
        "  agent a is in slow() at hk.py:6, handling src[0] offset 2 (key 'k3')\n"
        "the outputs hold what was produced until then\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(d["offset"], d["key"], d["value"]) for d in written] == [
        (0, "k1", {"n": 1}),
        (1, "k2", {"n": 2}),
    ]


def test_run_killed_keeps_the_records_printed_so_far(tmp_path: Path) -> None:
    _hooked(tmp_path)
    args = ["run", "h.sdl", "--input", "src=in.jsonl", "--output", "dst=-"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamc.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = [proc.stdout.readline(), proc.stdout.readline()]  # then the hook never returns
    proc.kill()
    proc.wait(10)
    assert [json.loads(line)["value"] for line in printed] == [{"n": 1}, {"n": 2}]


def test_run_progress_goes_to_stderr_every_interval_not_to_stdout(tmp_path: Path) -> None:
    _hooked(tmp_path, delay=0.3)
    result = _streamc_run(
        "h.sdl", "--input", "src=in.jsonl", "--output", "dst=-", "--timeout", "1.4s",
        "--progress-interval", "0.5s",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert [json.loads(line)["value"] for line in result.stdout.splitlines()] == [
        {"n": 1},
        {"n": 2},
    ]
    progress = [line for line in result.stderr.splitlines() if "read messages done" in line]
    # one line every 0.5s: records 1 and 2 are done at 0.3s and 0.6s, then the hook hangs
    assert len(progress) >= 2
    assert all(
        re.fullmatch(r"streamc run: 4 in, [012] out, [012]/4 read messages done, \d+\.\ds", line)
        for line in progress
    ), progress
    assert progress[-1].startswith("streamc run: 4 in, 2 out, 2/4 read messages done, ")


def test_run_stops_a_cycle_at_max_records(tmp_path: Path) -> None:
    sdl = tmp_path / "cycle.sdl"
    sdl.write_text("app c\ntopic t: int key str\nagent loop = from t | to t\n")
    (tmp_path / "in.jsonl").write_text('{"value": 1}\n')
    result = _streamc_run(
        "cycle.sdl", "--input", "t=in.jsonl", "--max-records", "300", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert "streamc run: stopped after the worker wrote " in result.stderr
    assert "records (limit 300); does an agent read a topic that it or another" in result.stderr


@pytest.mark.parametrize(
    ("prelude", "expected"),
    [
        ("import no_such_module\n", "hk.py:1: error: importing the hook module failed: "
         "ModuleNotFoundError: No module named 'no_such_module'"),
        ("x = 1\nraise RuntimeError('no config')\n", "hk.py:2: error: importing the hook module "
         "failed: RuntimeError: no config"),
        ("import json\nCONFIG = json.loads('{')\n", "hk.py:2: error: importing the hook module "
         "failed: JSONDecodeError: Expecting property name enclosed in double quotes"),
        ("import sys\nsys.exit(0)\n", "hk.py:2: error: importing the hook module failed: "
         "SystemExit: 0"),
        ("import sys\nsys.exit()\n", "hk.py:2: error: importing the hook module failed: "
         "SystemExit\n"),
    ],
)  # fmt: skip
def test_run_hook_module_failing_at_import_is_a_user_error(
    tmp_path: Path, prelude: str, expected: str
) -> None:
    _hooked(tmp_path, prelude=prelude)
    result = _streamc_run("h.sdl", "--input", "src=in.jsonl", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(expected)
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("helper", "expected"),
    [
        ("LIMIT = 1\nraise RuntimeError('no config')\n", "helpers.py:2: error: importing the "
         "hook module failed: RuntimeError: no config"),
        ("import no_such_module\n", "helpers.py:1: error: importing the hook module failed: "
         "ModuleNotFoundError: No module named 'no_such_module'"),
    ],
)  # fmt: skip
def test_run_names_the_local_module_that_fails_at_import(
    tmp_path: Path, helper: str, expected: str
) -> None:
    _hooked(tmp_path, prelude="from helpers import LIMIT\n")
    (tmp_path / "helpers.py").write_text(helper)
    result = _streamc_run("h.sdl", "--input", "src=in.jsonl", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(expected)
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"value": {"n": 1}, "key": 1e400}', "invalid JSON: number 1e400 is out of range"),
        ('{"value": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
        ('{"value": {"n": NaN}}', "invalid JSON: NaN is not JSON"),
        ('{"value": {"n": 1}, "partition": true}', "topic 'src': 'partition' must be an integer"),
        ('{"value": {"n": 1}, "headers": {"h": null}}', "topic 'src': header 'h' must be a string"),
        ('{"value": {"n": 1}, "headers": {"h": {}}}', "topic 'src': header 'h' must be a string"),
    ],
)  # fmt: skip
def test_run_input_mistakes_name_file_and_line_and_exit_1(
    tmp_path: Path, line: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _hooked(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"value": {"n": 1}}\n' + line + "\n")
    sdl = tmp_path / "h.sdl"
    status = main(["run", str(sdl), "--input", f"src={tmp_path / 'in.jsonl'}", "--output", "dst=-"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""  # nothing is produced before every input is checked
    assert captured.err.startswith(f"{tmp_path}/in.jsonl:2: {expected}")
    assert len(captured.err.splitlines()) == 1
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


def test_run_prints_the_final_table_rows_of_a_stateful_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text(
        "".join(
            json.dumps(
                {"key": account, "value": {"id": i, "account_id": account, "amount": amount}}
            )
            + "\n"
            for i, account, amount in [("o1", "b", 1.5), ("o2", "a", 2.0), ("o3", "b", 3.0)]
        )
    )
    (tmp_path / "t.sdl").write_text(
        "record Order { id: str account_id: str amount: float }\n"
        "record Totals { account_id: str orders: int amount: float }\n"
        "table totals: Totals key str\n"
        "topic orders: Order key str partitions 2\n"
        "agent totals = from orders | group_by account_id\n"
        "    | aggregate totals { account_id = key, orders = count(), amount = sum(amount) }\n"
    )
    args = ["run", str(tmp_path / "t.sdl"), "--input", f"orders={tmp_path / 'in.jsonl'}"]
    assert main([*args, "--table", "totals=-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        {"key": "a", "value": {"account_id": "a", "orders": 1, "amount": 2.0}},
        {"key": "b", "value": {"account_id": "b", "orders": 2, "amount": 4.5}},
    ]
    # The changelog is a topic of the run too: one record per applied order, and skip maps.
    assert main([*args, "--output", "t-totals-changelog=-"]) == 0
    changelog = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["value"] for c in changelog if c["key"] == "b"] == [
        {"orders": 1, "amount": 1.5},
        {"orders": 2, "amount": 4.5},
    ]
