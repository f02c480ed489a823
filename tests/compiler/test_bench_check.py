"""bench/bench_check.py measures what it says: its programs parse and check clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from .conftest import REPO


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_check", REPO / "bench" / "bench_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_large_measurement_checks_its_agents_program_clean(tmp_path: Path) -> None:
    bench = _bench()
    (tmp_path / "agents.sdl").write_text(bench.generate(25, 200), encoding="utf-8")
    figures = bench.measure(str(tmp_path / "agents.sdl"))
    assert figures["mb"] == len(bench.generate(25, 200).encode()) / 1e6
    assert figures["rss_peak"] >= figures["rss_before"] > 0


def test_large_measurement_checks_its_literal_program_clean(tmp_path: Path) -> None:
    bench = _bench()
    (tmp_path / "literal.sdl").write_text(bench.literal_program(1000), encoding="utf-8")
    figures = bench.measure(str(tmp_path / "literal.sdl"))
    assert figures["mb"] == len(bench.literal_program(1000).encode()) / 1e6
