"""The sample's diagram in docs/architecture.md is what `streamc graph` prints today."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamc.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_architecture_doc_shows_the_current_sample_graph(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["graph", str(REPO / "samples" / "orders.sdl")]) == 0
    diagram = capsys.readouterr().out
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{diagram}```" in doc, (
        "run python tests/golden/regenerate.py"
    )
