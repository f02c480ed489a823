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
    # Each batch is cut from one partition of the repartition topic, where every account's
    # orders keep their order of arrival.
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
