"""Shared helpers for the front-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CASES = Path(__file__).resolve().parent / "cases"


@pytest.fixture
def sample_text() -> str:
    return (SAMPLES / "orders.sdl").read_text(encoding="utf-8")


@pytest.fixture
def hooks_text() -> str:
    return (SAMPLES / "hooks.py").read_text(encoding="utf-8")
