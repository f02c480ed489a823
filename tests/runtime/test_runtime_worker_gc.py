"""A generated worker's process collects young cycles in passes of `GC_YOUNG_THRESHOLD`
objects, not Python's 700 (see `streamc_runtime.main`), and gives the caller its own setting
back when it returns."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from streamc_runtime import App, main, worker_main


def test_a_worker_runs_with_the_young_threshold_raised_and_restores_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def serve(*args: Any) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(main, "_serve", serve)
    monkeypatch.setattr(main, "configure", lambda *args: None)  # leave the test's logging be
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])  # Python's default, whatever ran before
    try:
        assert worker_main(App("gc"), ["--broker", "memory://"]) == 0
        assert seen == [(10_000, before[1], before[2])]
        assert gc.get_threshold() == (700, before[1], before[2])
    finally:
        gc.set_threshold(*before)
