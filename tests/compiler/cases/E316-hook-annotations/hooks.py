from __future__ import annotations

from collections.abc import Awaitable

from ..records import Order, Refund


def is_big(x: int) -> str:
    return "yes"


async def fix(order: Refund) -> Order:
    return order


def note_of(order: Order) -> str:
    return order.note or ""


def show(n: float, order: Order) -> None:
    print(n, order)


def save(orders: list[Order | None]) -> bool:
    return bool(orders)


def later(order: Order) -> Awaitable[None]:
    raise NotImplementedError


def label(text: str) -> str:
    return text
