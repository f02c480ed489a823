"""Hooks may be named like the runtime helpers generated code calls: both keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamc.cli import main

_SDL = """\
app clash

record Order {
    id: str
    quantity: int
}

topic orders: Order key str partitions 1
topic out: Order key str partitions 1

hooks "hk.py" {
    awaitable(Order) -> Order
    result_check(Order) -> bool
}

agent a = from orders | process awaitable | filter result_check | to out
"""

# Each hook returns what the runtime helper of its name would never return for the call the
# generated loop makes of it, so a call that reaches the wrong one changes the output.
_HOOKS = """\
def awaitable(order):
    order.quantity *= 10
    return order


def result_check(order):
    return order.quantity > 10
"""


def test_hooks_named_like_the_fused_loops_helpers_are_the_ones_called(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "h.sdl").write_text(_SDL)
    (tmp_path / "hk.py").write_text(_HOOKS)
    (tmp_path / "in.jsonl").write_text(
        "".join(f'{{"value": {{"id": "o{n}", "quantity": {n}}}, "key": "k{n}"}}\n' for n in (1, 2))
    )
    args = ["run", str(tmp_path / "h.sdl"), "--input", f"orders={tmp_path / 'in.jsonl'}"]
    assert main([*args, "--output", "out=-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["key"], d["value"]) for d in out] == [("k2", {"id": "o2", "quantity": 20})]
