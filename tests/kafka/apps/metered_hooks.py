"""Hooks for metered.sdl: a sink that takes a few milliseconds per order."""

from __future__ import annotations

import asyncio
from typing import Protocol


class OrderLike(Protocol):
    id: str


async def settle(order: OrderLike) -> None:
    await asyncio.sleep(0.004)
