"""Hook annotations are checked against the .sdl declaration, and only where they are known."""

from __future__ import annotations

import pytest
from streamc.checker import check
from streamc.diagnostics import render
from streamc.parser import parse

SDL = """\
record Order { id: str  amount: float  note: str? }
topic orders: Order key str
hooks "hooks.py" {
    hook(SIGNATURE)
}
"""


def problems(signature: str, hooks: str) -> list[tuple[int, str]]:
    """(line in hooks.py, message) of every E316 for one declared hook `hook`."""
    text = SDL.replace("SIGNATURE)", signature)
    found = check(parse(text, "t.sdl"), {"hooks.py": hooks}).diagnostics
    if not found:
        return []
    assert {d.code for d in found} == {"E316"}, render(found, {"t.sdl": text})
    assert all(d.file == "hooks.py" for d in found)
    return [(d.line, d.message) for d in found]


# Annotations that agree with the declaration, or that cannot be resolved without running
# the module: none of them may be reported.
@pytest.mark.parametrize(
    ("signature", "hooks"),
    [
        ("Order) -> bool", "def hook(order):\n    return True\n"),
        ("Order) -> bool", "def hook(order: Order) -> bool: ..."),
        ("Order) -> bool", "def hook(order: 'Order') -> 'bool': ..."),
        ("Order) -> bool", "from ..records import Order\ndef hook(order: Order) -> bool: ..."),
        (
            "Order) -> bool",
            "from shop_worker.records import Order as O\ndef hook(order: O) -> bool: ...",
        ),
        ("Order) -> bool", "from typing import Any\ndef hook(order: Any) -> Any: ..."),
        ("Order) -> bool", "def hook(order: object) -> bool: ..."),
        # A Protocol, a TypeVar, a class of the module's own: unknown, so accepted.
        (
            "Order) -> Order",
            "from typing import Protocol, TypeVar\n"
            "class OrderLike(Protocol):\n    id: str\n"
            "T = TypeVar('T', bound=OrderLike)\n"
            "def hook(order: T) -> T: ...",
        ),
        (
            "Order) -> bool",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from mylib import Order\ndef hook(order: Order) -> bool: ...",
        ),
        ("Order) -> bool", "class Order: ...\ndef hook(order: Order) -> bool: ..."),
        ("Order) -> Order", "async def hook(order: Order) -> Order: ..."),
        # A plain def sink handing back an awaitable (a retry wrapper): the runtime awaits it.
        (
            "Order)",
            "import collections.abc\n"
            "def hook(order: Order) -> collections.abc.Awaitable[None]: ...",
        ),
        (
            "Order) -> Order",
            "from typing import Awaitable\ndef hook(order: Order) -> Awaitable[Order]: ...",
        ),
        (
            "Order) -> Order",
            "import typing\ndef hook(order: Order) -> "
            "typing.Coroutine[typing.Any, typing.Any, Order]: ...",
        ),
        ("Order) -> str?", "def hook(order: Order) -> str: ..."),
        (
            "Order) -> str?",
            "from typing import Optional\ndef hook(order: Order) -> Optional[str]: ...",
        ),
        ("str?) -> str", "def hook(text: str | None) -> str: ..."),
        ("str?) -> str", "import typing as t\ndef hook(text: t.Union[str, None]) -> str: ..."),
        ("int) -> float", "def hook(n: float) -> int: ..."),  # int is a float, not back
        ("bool) -> int", "def hook(b: int) -> bool: ..."),
        ("list[Order])", "def hook(orders: list) -> None: ..."),
        ("list[Order])", "from typing import List\ndef hook(orders: List[Order]) -> None: ..."),
        ("int, Order)", "def hook(n: int, *rest: Order) -> None: ..."),
        ("(int, Order))", "def hook(pair: tuple[int, Order]) -> None: ..."),
        ("(int, Order))", "def hook(pair: tuple[int, ...]) -> None: ..."),
        ("Event[str, Order])", "async def hook(event: Event[str, Order]) -> None: ..."),
        ("any)", "def hook(x: object) -> None: ..."),
        ("Order)", "async def hook(order: Order) -> None: ..."),
        ("Order) -> bool", "def hook(order: 'not python (') -> bool: ..."),
    ],
)
def test_agreeing_or_unknown_annotations_are_accepted(signature: str, hooks: str) -> None:
    assert problems(signature, hooks) == []


@pytest.mark.parametrize(
    ("signature", "hooks", "expected"),
    [
        (
            "Order) -> bool",
            "def hook(x: int) -> bool: ...",
            [(1, "parameter 'x' is annotated int, but the hook is declared to take Order there")],
        ),
        (
            "Order) -> bool",
            "def hook(order: Order) -> str: ...",
            [
                (
                    1,
                    "the function is annotated to return str, but the hook is declared to return "
                    "bool",
                )
            ],
        ),
        (
            "Order) -> bool",
            "def hook(order: Order) -> 'int': ...",
            [
                (
                    1,
                    "the function is annotated to return 'int', but the hook is declared to return "
                    "bool",
                )
            ],
        ),
        (
            "str?) -> str",
            "from typing import Optional\n\ndef hook(t: str) -> Optional[str]: ...",
            [
                (3, "parameter 't' is annotated str, but the hook is declared to take str? there"),
                (
                    3,
                    "the function is annotated to return Optional[str], but the hook is "
                    "declared to return str",
                ),
            ],
        ),
        (
            "float)",
            "def hook(n: int) -> None: ...",
            [(1, "parameter 'n' is annotated int, but the hook is declared to take float there")],
        ),
        (
            "list[Order])",
            "import typing\ndef hook(orders: typing.List[str]) -> None: ...",
            [
                (
                    2,
                    "parameter 'orders' is annotated typing.List[str], but the hook is declared to "
                    "take list[Order] there",
                )
            ],
        ),
        (
            "(int, Order))",
            "def hook(pair: tuple[Order, int]) -> None: ...",
            [
                (
                    1,
                    "parameter 'pair' is annotated tuple[Order, int], but the hook is declared to "
                    "take (int, Order) there",
                )
            ],
        ),
        (
            "any)",
            "def hook(x: int) -> None: ...",
            [(1, "parameter 'x' is annotated int, but the hook is declared to take any there")],
        ),
        (
            "Order) -> Order",
            "async def hook(order: Order) -> None: ...",
            [
                (
                    1,
                    "the function is annotated to return None, but the hook is declared to return "
                    "Order",
                )
            ],
        ),
        (
            "Order) -> Order",
            "from collections.abc import Awaitable\ndef hook(order: Order) -> Awaitable[str]: ...",
            [
                (
                    2,
                    "the function is annotated to return Awaitable[str], but the hook is declared "
                    "to return Order",
                )
            ],
        ),
        (
            "int, Order)",
            "def hook(n: int, *rest: str) -> None: ...",
            [
                (
                    1,
                    "parameter 'rest' is annotated str, but the hook is declared to take Order "
                    "there",
                )
            ],
        ),
    ],
)
def test_contradicting_annotations_are_reported_where_they_are(
    signature: str, hooks: str, expected: list[tuple[int, str]]
) -> None:
    assert problems(signature, hooks) == [(line, f"hook 'hook': {m}") for line, m in expected]


def test_the_mismatch_points_at_the_annotation_with_the_declaration_as_hint() -> None:
    text = SDL.replace("SIGNATURE)", "Order) -> bool")
    hooks = "def hook(ordér: int) -> bool: ..."
    result = check(parse(text, "shop/t.sdl"), {"hooks.py": hooks})
    assert result.program is None
    assert render(result.diagnostics, {"shop/hooks.py": hooks}) == (
        "shop/hooks.py:1:17: error[E316]: hook 'hook': parameter 'ordér' is annotated int, "
        "but the hook is declared to take Order there\n"
        "    | def hook(ordér: int) -> bool: ...\n"
        "    |                 ^^^\n"
        "hint: it is declared at shop/t.sdl:4 as `hook(Order) -> bool`\n"
    )
