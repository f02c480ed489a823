"""Reduce hooks of aggregates.sdl: one plain, one async."""

from __future__ import annotations

from typing import Protocol


class OrderLike(Protocol):
    id: str
    quantity: int


def longer(best: str, order: OrderLike) -> str:
    return order.id if len(order.id) > len(best) else best


async def add_units(seen: list[int], order: OrderLike) -> list[int]:
    return [*seen, order.quantity]
